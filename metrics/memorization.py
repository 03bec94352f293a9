"""STUB: to be implemented."""

def authpct(*args, **kwargs):
    raise NotImplementedError


def ct(*args, **kwargs):
    raise NotImplementedError


