"""Task queues: the transport between recorded actions and workers."""
