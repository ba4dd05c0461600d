"""Guards: pure checks that decide whether a violation may become an action."""
