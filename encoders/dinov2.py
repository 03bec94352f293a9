"""STUB: to be implemented."""
