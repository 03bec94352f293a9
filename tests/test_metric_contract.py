"""Contract tests that every registered metric gets automatically (STYLE.md §8–9).

Parametrised over the registry, so a new metric file is tested the moment it registers:

* its declaration is complete and consistent with what the function returns;
* its value at the default parameters equals its anchor (the package SPEC names, or a
  brute-force definition from ``anchors.py``) where one exists; ``NO_ANCHOR`` lists the others
  and where their reference tests live;
* seed determinism: the same seed gives identical numbers, an int seed and the same
  ``SeedSequence``/``Generator`` give the same numbers, and a metric that draws random numbers
  moves with the seed;
* row-order invariance, for every metric that declares ``order_invariant``;
* its declared direction: a better generated set (closer to the reference, more diverse, not
  copied) scores better on every output key that has a direction.

Everything runs on small sets (N ≤ 240, D = 8) on the CPU.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from anchors import (
    authpct_brute,
    cmmd_brute,
    prdc_package,
    pytorch_fid,
    torch_fidelity_isc,
    torch_fidelity_kid,
    vendi_package,
)

import evalkit.metrics as M
from evalkit.metrics import get_metric, list_metrics, result_directions
from evalkit.metrics._registry import ARG_NAMES

CPU = "cpu"
N, D, C, CLASSES = 160, 8, 10, 3
NAMES = list_metrics()


# --------------------------------------------------------------------------------- data


def _features(seed: int, n: int = N, shift: float = 0.0) -> np.ndarray:
    g = np.random.default_rng(seed)
    return g.standard_normal((n, D)) + shift


def _logits(seed: int, n: int = N, sharp: float = 4.0, classes: np.ndarray | None = None) -> np.ndarray:
    """Logits whose softmax is confident (``sharp`` large) about a class spread over C classes
    (about ``classes``, one per row, when given)."""
    g = np.random.default_rng(seed)
    cls = g.integers(0, C, n) if classes is None else classes
    return sharp * np.eye(C)[cls] + g.standard_normal((n, C))


def _sets(spec, kind: str = "good", seed: int = 0) -> dict:
    """Inputs for ``spec``: reference, test and a generated set of the given ``kind``.

    good: the reference's distribution; shift: moved off it; collapse: a few modes only;
    copy: reference rows plus 1e-3 noise; flat: (logits) an unsure classifier; mislabel:
    (logits) confident, but not about the requested labels.
    """
    if spec.array == "logits":
        # good: confident about each row's requested label (``_labels()``), spread over classes
        spread = _labels() + 3 * np.random.default_rng(seed + 8).integers(0, 3, N)
        fake = {"good": lambda: _logits(seed + 2, classes=spread),
                "flat": lambda: _logits(seed + 2, sharp=0.0),
                "collapse": lambda: _logits(seed + 2, classes=np.zeros(N, dtype=int)),
                "mislabel": lambda: _logits(seed + 2, classes=(spread + 1) % C)}[kind]()
        return {"fake": fake, "real": _logits(seed + 1), "test": _logits(seed + 3)}
    real, test = _features(seed + 1), _features(seed + 3)
    g = np.random.default_rng(seed + 2)
    # conditions: row i's prompt id, its text embedding (near the good set's row i), the
    # reference's class labels
    cond = {"prompts": np.arange(N) % 20, "real_labels": _labels(seed + 6),
            "text": _features(seed + 2) + 0.5 * np.random.default_rng(seed + 7).standard_normal((N, D))}
    fake = {
        "good": lambda: _features(seed + 2),
        "shift": lambda: _features(seed + 2, shift=2.0),
        "collapse": lambda: _features(seed + 2, n=3)[g.integers(0, 3, N)] + 0.01 * g.standard_normal((N, D)),
        "copy": lambda: real[g.permutation(N)] + 1e-3 * g.standard_normal((N, D)),
    }[kind]()
    return {"real": real, "fake": fake, "test": test, **cond}


def _labels(seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, CLASSES, N)


def _run(spec, arrays: dict, *, seed=0, labels=None, **overrides) -> dict:
    kwargs = {k: arrays[k] for k in ARG_NAMES if k in spec.args and k != "labels"}
    if labels is None and "labels" in spec.args:  # a metric that needs labels always gets them
        labels = _labels()
    if labels is not None and ("labels" in spec.args or "labels" in spec.optional):
        kwargs["labels"] = labels
    out = spec(seed=seed, device=CPU, **kwargs, **overrides)
    return {k: v for k, v in out.items() if not k.startswith("_")}


def _param(names):
    return pytest.mark.parametrize("name", names)


# --------------------------------------------------------------------------------- declarations


@_param(NAMES)
def test_declaration_matches_what_the_function_returns(name):
    spec = get_metric(name)
    assert spec.outputs[0].key == name and spec.outputs[0].select
    for o in spec.outputs:
        assert o.description.strip() and o.better in ("lower", "higher", "zero", "none"), o
    assert set(spec.args) | set(spec.optional) <= set(ARG_NAMES)
    # the group's entries together report exactly what the function returns (labels included)
    group_keys = {k for other in spec.group for k in get_metric(other).keys}
    out = _run(spec, _sets(spec), labels=_labels())
    assert set(out) == group_keys, name
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values()), out
    # defaults are read from the signature, not declared twice
    assert spec.seeded == ("seed" in spec.defaults)


def test_result_keys_are_unique_and_derived_tables_agree():
    from evalkit.results.directions import metric_directions
    from evalkit.results.record import METRIC_KEYS

    keys = M.result_keys()
    assert len(keys) == len(set(keys))
    assert METRIC_KEYS == keys
    assert set(metric_directions()) == set(keys) == set(result_directions())
    assert M.moments_metrics() == {"fd": "features", "sfid": "spatial"}  # SPEC: fd, sfid from mu/sigma


def test_register_metric_refuses_bad_declarations():
    def f(real, fake, *, device=None):
        return {}

    good = M.Output("zz_new", "lower", "a test metric")
    for bad in (
        lambda: M.register_metric(M.Output("fd", "lower", "clash"))(f),  # registered name
        lambda: M.register_metric(good, M.Output("kd_std", "none", "x", select=False))(f),  # taken key
        lambda: M.register_metric(M.Output("zz_new", "smaller", "x"))(f),  # unknown direction
        lambda: M.register_metric(M.Output("zz_new", "lower", " "))(f),  # no description
        lambda: M.register_metric(good, array="pixels")(f),  # unknown array kind
        lambda: M.register_metric(good, args=("real", "fake", "test"))(f),  # fn takes no test
        lambda: M.register_metric()(f),  # no outputs
    ):
        with pytest.raises(ValueError):
            bad()
    assert "zz_new" not in M.METRICS


@_param([n for n in NAMES if get_metric(n).moments is not None])
def test_moments_capability_equals_the_full_computation(name):
    spec = get_metric(name)
    arrays = _sets(spec)
    real = arrays["real"]
    full = _run(spec, arrays)
    stats = spec.moments(real.mean(0), np.cov(real, rowvar=False), arrays["fake"], device=CPU)
    assert stats == pytest.approx(full, rel=1e-10)


def test_metric_files_import_only_public_helpers_and_no_engine():
    """metrics/ imports from evalkit only the leaf modules errors/registry/devices/lazy, and no metric file
    imports another module's private (underscore) names."""
    root = Path(M.__file__).parent
    allowed = {"evalkit.errors", "evalkit.registry", "evalkit.devices", "evalkit.lazy"}
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("evalkit"):
                mod = node.module
                assert mod.startswith("evalkit.metrics") or mod in allowed, f"{path.name}: {mod}"
                if path.name != "__init__.py" and mod != "evalkit.metrics._registry":
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    assert not private, f"{path.name} imports private {private} from {mod}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("evalkit") or alias.name in allowed, path.name


# --------------------------------------------------------------------------------- anchors


def _prdc(a):
    return prdc_package(a["real"], a["fake"])


ANCHORS = {  # name -> (expected values from the anchor, relative tolerance)
    "fd": (lambda a: {"fd": pytorch_fid(a["real"], a["fake"])}, 1e-6),
    "sfid": (lambda a: {"sfid": pytorch_fid(a["real"], a["fake"])}, 1e-6),
    # N < subset_size: every subset is the whole set, so the value does not depend on the draws
    "kd": (lambda a: dict(zip(("kd", "kd_std"), torch_fidelity_kid(a["real"], a["fake"], 100, N))), 1e-8),
    "is": (lambda a: dict(zip(("is", "is_std"), torch_fidelity_isc(a["fake"]))), 1e-6),
    **{k: (_prdc, 0.0) for k in ("precision", "recall", "density", "coverage")},
    "vendi": (lambda a: vendi_package(a["fake"], a["labels"]), 1e-6),
    "authpct": (lambda a: {"authpct": authpct_brute(a["real"], a["fake"])}, 1e-12),
    "cmmd": (lambda a: {"cmmd": cmmd_brute(a["real"], a["fake"])}, 1e-9),
}
NO_ANCHOR = {  # no anchor package; the reference test named here checks the definition
    "fd_inf": "test_metrics_moments.py::test_fd_inf_matches_reference_protocol",
    "realism": "test_metrics_knn.py::test_realism_matches_definition",
    "ct": "test_metrics_knn.py::test_ct_matches_reference_pipeline",
    "fls": "test_metrics_knn.py::test_fls_matches_autograd_reference",
    "fls_pog": "test_metrics_knn.py::test_fls_matches_autograd_reference",
    "sw_approx": "test_metrics_moments.py::test_sw_approx_hand_checked",
    "clip_score": "test_conditional.py::test_clip_score_equals_torchmetrics_on_the_same_weights",
    "fd_per_class": "test_conditional.py::test_fd_per_class_equals_pytorch_fid_per_class",
    "class_coverage": "test_conditional.py::test_class_coverage_hand_checked",
    "class_kl": "test_conditional.py::test_class_coverage_hand_checked",
    "rke": "test_conditional.py::test_rke_equals_eigenvalue_definition",
    "rarity": "test_conditional.py::test_rarity_equals_authors_convention",
    "top_precision": "test_conditional.py::test_top_pr_equals_package",
    "precision_per_class": "test_conditional.py::test_prdc_per_class_equals_package_per_class",
    "top_recall": "test_conditional.py::test_top_pr_equals_package",
    "prompt_vendi": "test_conditional.py::test_prompt_diversity_equals_vendi_package_per_prompt",
    "prompt_similarity": "test_conditional.py::test_prompt_diversity_equals_vendi_package_per_prompt",
}


def test_every_metric_has_an_anchor_or_a_named_reference_test():
    assert set(ANCHORS) | set(NO_ANCHOR) == set(NAMES)
    assert not set(ANCHORS) & set(NO_ANCHOR)


@_param([n for n in NAMES if n in ANCHORS])
def test_equals_anchor_at_defaults(name):
    spec = get_metric(name)
    arrays = _sets(spec, "good", seed=10)
    labels = _labels()
    anchor, rel = ANCHORS[name]
    expected = anchor({**arrays, "labels": labels})
    out = _run(spec, arrays, labels=labels)
    for key in spec.keys:
        assert out[key] == pytest.approx(expected[key], rel=rel, abs=1e-12), key


# --------------------------------------------------------------------------------- seeds

# Parameters that make a seeded metric actually draw on these small sets: subsampling (the
# kNN metrics are order invariant only when it does not happen) and kd's subsets.
SUBSAMPLE = {k: {"max_samples": N - 40} for k in ("precision", "recall", "density", "coverage", "realism")}
SUBSAMPLE["rke"] = {"max_median": 100}  # its bandwidth's median on a seeded subset
SUBSAMPLE["rarity"] = {"max_samples": N - 40}
SUBSAMPLE["top_precision"] = SUBSAMPLE["top_recall"] = {"max_samples": N - 40}  # its O(N^2) cap
DRAWS = {**SUBSAMPLE, "kd": {"subset_size": 50}}


@_param(NAMES)
def test_seed_determinism(name):
    spec = get_metric(name)
    arrays, over = _sets(spec, "good", seed=20), DRAWS.get(name, {})
    first = _run(spec, arrays, seed=7, **over)
    assert _run(spec, arrays, seed=7, **over) == first
    # the run's SeedSequence children and Generators are accepted; int s == SeedSequence(s)
    assert _run(spec, arrays, seed=np.random.SeedSequence(7), **over) == first
    assert _run(spec, arrays, seed=np.random.default_rng(7), **over) == first
    others = [_run(spec, arrays, seed=s, **over) for s in (8, 9)]
    if spec.seeded:
        assert any(o[name] != first[name] for o in others), f"{name} ignores its seed"
    else:
        assert all(o == first for o in others)


# --------------------------------------------------------------------------------- row order


@_param([n for n in NAMES if get_metric(n).order_invariant])
def test_row_order_invariance(name):
    spec = get_metric(name)
    arrays, labels = _sets(spec, "good", seed=30), _labels()
    g = np.random.default_rng(31)
    perm = {k: g.permutation(len(v)) for k, v in arrays.items()}
    for k in ("text", "prompts"):  # conditions of the generated rows move with them
        perm[k] = perm["fake"]
    perm["real_labels"] = perm["real"]
    shuffled = {k: v[perm[k]] for k, v in arrays.items()}
    over = {} if name in SUBSAMPLE else DRAWS.get(name, {})
    a = _run(spec, arrays, labels=labels, **over)
    b = _run(spec, shuffled, labels=labels[perm["fake"]], **over)
    assert b == pytest.approx(a, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------------- direction

WORSE = {  # result key -> the kind of generated set that must score worse than a good one
    **{k: "shift" for k in ("fd", "fd_inf", "sfid", "kd", "cmmd", "sw_approx", "precision",
                            "recall", "density", "coverage", "realism", "fls")},
    "is": "flat", "vendi": "collapse", "vendi_per_class": "collapse",
    "authpct": "copy", "ct": "copy", "fls_pog": "copy", "clip_score": "shift",
    "fd_per_class": "shift", "prompt_vendi": "collapse", "prompt_vendi_all": "collapse",
    "prompt_similarity": "collapse", "class_coverage": "collapse", "class_kl": "collapse",
    "class_accuracy": "mislabel", "rke": "collapse",
    **{k: "shift" for k in ("top_precision", "top_recall", "top_f1", "precision_per_class",
                            "recall_per_class", "density_per_class", "coverage_per_class")},
}
DIRECTED = sorted(k for k, d in result_directions().items() if d != "none")


def test_every_directed_key_has_a_scenario():
    assert set(WORSE) == set(DIRECTED)


def _owner(key: str):
    return next(get_metric(n) for n in NAMES if key in get_metric(n).keys)


@pytest.mark.parametrize("key", DIRECTED)
def test_declared_direction(key):
    spec, better = _owner(key), result_directions()[key]
    labels = _labels()
    good = _run(spec, _sets(spec, "good", seed=40), labels=labels)[key]
    bad = _run(spec, _sets(spec, WORSE[key], seed=40), labels=labels)[key]
    if better == "higher":
        assert good > bad, (good, bad)
    elif better == "lower":
        assert good < bad, (good, bad)
    else:  # zero
        assert abs(good) < abs(bad), (good, bad)
