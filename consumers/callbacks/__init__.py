"""Callback tasks: a missed caller gets a task that closes itself once reached (docs/callbacks.md)."""
