"""STUB: to be implemented."""

def per_sample(*args, **kwargs):
    raise NotImplementedError


