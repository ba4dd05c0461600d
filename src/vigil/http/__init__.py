"""HTTP plumbing shared by Vigil's apps (the API and the remediator service): error answers
and their handlers, and the request id every answer and log line carries."""
