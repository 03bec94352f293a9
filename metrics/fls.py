"""STUB: to be implemented."""

def fls(*args, **kwargs):
    raise NotImplementedError


def fls_pog(*args, **kwargs):
    raise NotImplementedError


