"""The ADM evaluator's metric conventions (guided-diffusion ``evaluations/evaluator.py``)
against an independent numpy reimplementation (tests/adm_reference.py): Inception Score with
ordered splits of 5,000, precision/recall on squared float16 distances with ``<=``."""
from __future__ import annotations

import adm_reference as ref
import numpy as np
import pytest

from evalkit.metrics.inception_score import inception_score
from evalkit.metrics.prdc import prdc
from evalkit.metrics.primitives import adm


def _logits(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 50)) * 2 + rng.standard_normal(50) * 3).astype(np.float32)


def test_adm_is_equals_ordered_splits_of_5000():
    z = _logits(12000, 0)  # splits of 5000, 5000 and 2000
    got = inception_score(z, convention="adm")["is"]
    want = ref.inception_score(z)
    assert got == pytest.approx(want, rel=1e-5)  # ADM's float32 softmax/KL vs float64
    # planted: torch-fidelity's shuffled 10 splits, or ADM's splits over shuffled rows
    assert inception_score(z)["is"] != pytest.approx(want, rel=1e-4)
    shuffled = z[np.random.default_rng(1).permutation(len(z))]
    assert ref.inception_score(shuffled) != pytest.approx(want, rel=1e-4)


def test_adm_is_single_short_split():
    z = _logits(300, 2)
    assert inception_score(z, convention="adm")["is"] == pytest.approx(ref.inception_score(z), rel=1e-5)


def _lattice(n: int, d: int, seed: int) -> np.ndarray:
    """Features on a 1/4 grid in [0, 4): float16-exact, float32-exact products and sums, and
    many distances equal to radii (so '<' and '<=' disagree)."""
    return np.random.default_rng(seed).integers(0, 16, (n, d)).astype(np.float32) / 4


def test_adm_pr_exact_on_lattice_features():
    real, fake = _lattice(300, 24, 0), _lattice(400, 24, 1) + 0.25
    out = prdc(real, fake, nearest_k=3, convention="adm")
    want = ref.precision_recall(real, fake)
    assert (out["precision"], out["recall"]) == want
    assert out["_float16_borderline"]["precision"] + out["_float16_borderline"]["recall"] >= 0
    # the convention matters on these features: '<' moves them
    assert ref.precision_recall(real, fake, strict=True) != want
    assert "density" not in out  # ADM reports precision and recall only


def test_adm_radii_are_squared_float16_distances():
    """The radii themselves: entry 3 of the sorted row of squared float16 distances, self
    included (plain distances would be another scale)."""
    x = _lattice(300, 24, 5)
    got = adm.adm_radii(x, nearest_k=3).numpy()
    np.testing.assert_array_equal(got, ref.radii(x))
    assert not np.array_equal(got, ref.radii(x, squared=False))


def test_adm_pr_block_fallback_to_float32(monkeypatch):
    """A block whose float16 distances overflow is recomputed in float32 (ADM's tf.cond),
    the other blocks stay float16: blocks of 100 rows here, as 10,000 in ADM."""
    monkeypatch.setattr(adm, "ADM_BLOCK", 100)
    monkeypatch.setattr(adm, "_SUB_ROWS", 37)
    real, fake = _lattice(250, 16, 3), _lattice(230, 16, 4)
    real[5] *= 200.0  # squared norm beyond float16's 65504: its blocks go float32
    fake[150] *= 200.0
    out = prdc(real, fake, nearest_k=3, convention="adm")
    assert (out["precision"], out["recall"]) == ref.precision_recall(real, fake, block=100)


def test_adm_pr_within_counted_float16_borderline():
    """Realistic features: float32 accumulation order (numpy vs torch) can move a float16
    distance by one ulp; the difference stays within the samples counted as borderline."""
    rng = np.random.default_rng(7)
    real = np.abs(rng.standard_normal((600, 128)) * 0.5 + 0.3).astype(np.float32)
    fake = np.abs(rng.standard_normal((700, 128)) * 0.55 + 0.3).astype(np.float32)
    out = prdc(real, fake, nearest_k=3, convention="adm")
    p, r = ref.precision_recall(real, fake)
    border = out["_float16_borderline"]
    assert abs(out["precision"] * 700 - p * 700) <= border["precision"] + 1e-9
    assert abs(out["recall"] * 600 - r * 600) <= border["recall"] + 1e-9
    assert border["precision"] + border["recall"] > 0  # float16 ties are real at this scale
    # the default (prdc) convention is another number
    assert prdc(real, fake, nearest_k=3)["precision"] != p or prdc(real, fake, nearest_k=3)["recall"] != r


def test_adm_ulp():
    import torch

    v = torch.tensor([1.0, 1.5, 64.0, 100.0, 0.0, 2.0**-20])
    u = adm.ulp(v, True)
    assert u.tolist() == [2.0**-10, 2.0**-10, 2.0**-4, 2.0**-4, 2.0**-24, 2.0**-24]
    assert u.tolist() == [float(np.spacing(np.float16(x))) for x in v.tolist()]
