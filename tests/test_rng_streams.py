"""Every metric function draws from its own child of the run seed (numpy's SeedSequence
spawn mechanism, keyed by name): no two functions share a stream, and adding or removing a
metric never changes another's value under the same seed."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import evalkit
from evalkit.metrics import metric_specs
from evalkit.scoring.rng import RunRNG
from evalkit.scoring.run import stream_name


def test_each_metric_function_has_its_own_stream():
    by_function = {}
    for spec in metric_specs():
        by_function.setdefault((spec.fn.__module__, spec.fn.__qualname__), spec)
    seeds = {}
    for spec in by_function.values():
        seed = RunRNG(0).seed_for("metric", stream_name(spec))
        assert seed not in seeds, f"{spec.name} shares a random stream with {seeds[seed]}"
        seeds[seed] = spec.name
    assert len(seeds) == len(by_function) > 10


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(90, 12)), rng.normal(size=(80, 12)) + 0.3,
            rng.normal(size=(70, 12)))


def _score(sets, metrics, nsample=None):
    fake, real, test = sets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evalkit.score(fake, real, test=test, metrics=metrics, seed=3, nsample=nsample,
                             quiet=True).metrics


@pytest.mark.parametrize("nsample", [None, 60])
def test_adding_or_removing_a_metric_changes_no_other(sets, nsample):
    everything = _score(sets, "all", nsample)
    names = sorted({s.name for s in metric_specs()} & set(everything))
    assert len(names) > 8
    for name in names:
        alone = _score(sets, name, nsample)
        assert alone[name] == everything[name], name  # bit-identical: same stream, same draws
    half = names[::2]
    some = _score(sets, ",".join(half), nsample)
    assert {k: some[k] for k in half} == {k: everything[k] for k in half}
