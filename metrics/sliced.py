"""STUB: to be implemented."""

def sw_approx(*args, **kwargs):
    raise NotImplementedError


