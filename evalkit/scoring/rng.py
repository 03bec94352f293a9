"""The run's randomness: one root seed, one independent child stream per named consumer.

``RunRNG(seed)`` holds ``numpy.random.SeedSequence(seed)``; every consumer asks for its own
child by a name path (``("subsample", "reference")``, ``("metric", "kd")``,
``("bootstrap", "resample")``). A child is ``SeedSequence(seed, spawn_key=<hashed path>)``:
the mechanism ``SeedSequence.spawn`` uses, keyed by name instead of by position, so adding a
consumer (a new metric, a bootstrap) never shifts the draws of another, and scoring a set
alone or next to others gives it the same numbers.
"""
from __future__ import annotations

import hashlib

import numpy as np


def _word(part: str | int) -> int:
    """A stable 32-bit word for one element of a name path."""
    if isinstance(part, (int, np.integer)) and not isinstance(part, bool):
        return int(part) & 0xFFFFFFFF
    return int.from_bytes(hashlib.sha256(str(part).encode("utf-8")).digest()[:4], "little")


class RunRNG:
    """Named child streams of one run seed (``--seed``)."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def child(self, *path: str | int) -> np.random.SeedSequence:
        """The SeedSequence of consumer ``path`` (independent of every other path)."""
        return np.random.SeedSequence(self.seed, spawn_key=tuple(_word(p) for p in path))

    def generator(self, *path: str | int) -> np.random.Generator:
        """A numpy Generator on consumer ``path``'s stream."""
        return np.random.default_rng(self.child(*path))

    def seed_for(self, *path: str | int) -> int:
        """A 63-bit integer seed for consumer ``path`` (for functions taking an int seed)."""
        state = self.child(*path).generate_state(2, np.uint32)
        return int((int(state[0]) << 31) ^ int(state[1]))
