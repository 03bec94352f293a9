"""STUB: to be implemented."""

def vendi(*args, **kwargs):
    raise NotImplementedError


