"""Workers: take tasks from the queue, run them through the remediator, record outcomes."""
