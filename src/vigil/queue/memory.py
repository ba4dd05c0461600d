"""The in-process queue of the embedded default (to be written)."""
