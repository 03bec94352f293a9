"""STUB: to be implemented."""

def kd(*args, **kwargs):
    raise NotImplementedError


def cmmd(*args, **kwargs):
    raise NotImplementedError


