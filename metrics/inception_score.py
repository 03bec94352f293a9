"""STUB: to be implemented."""

def inception_score(*args, **kwargs):
    raise NotImplementedError


