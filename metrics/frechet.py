"""STUB: to be implemented."""

def fd(*args, **kwargs):
    raise NotImplementedError


def fd_inf(*args, **kwargs):
    raise NotImplementedError


def sfid(*args, **kwargs):
    raise NotImplementedError


