"""STUB: to be implemented."""

def prdc(*args, **kwargs):
    raise NotImplementedError


def precision(*args, **kwargs):
    raise NotImplementedError


def recall(*args, **kwargs):
    raise NotImplementedError


def density(*args, **kwargs):
    raise NotImplementedError


def coverage(*args, **kwargs):
    raise NotImplementedError


def realism(*args, **kwargs):
    raise NotImplementedError


