"""FD∞: evalkit against dgm-eval's own ``compute_FD_infinity``, over seeds, on synthetic fixtures.

dgm-eval's ``dgm_eval/metrics/fd.py`` needs only numpy, scipy, tqdm and scikit-learn, so it is
imported by path from a copy kept OUTSIDE the repository (it is not installable as a package
here: its ``setup.py`` pins torch and the encoders' dependencies)::

    git -C <dgm-eval checkout or mirror> show HEAD:dgm_eval/metrics/fd.py > /tmp/dgm/dgm_fd.py
    python benchmarks/fd_inf_vs_dgm_eval.py --dgm /tmp/dgm/dgm_fd.py --seeds 20

Two comparisons per fixture:

* **spread**: each side draws its own subsets ``--seeds`` times (evalkit: ``fd_inf(seed=s)``;
  dgm-eval: its ``np.random.default_rng()``, unseeded as it ships), and the table prints both
  means ± standard errors, ``z`` = difference / combined standard error and the ratio of the two
  standard deviations (a noisier estimator would show a ratio well above 1);
* **same draws**: dgm-eval's ``np.random.default_rng()`` is handed ``default_rng(s)`` for the
  call, so both sides draw from the same stream; the largest relative difference of the two
  FD∞ values over the seeds shows whether the subsets themselves are the same (round-off: the
  same subsets, the same sizes and the same fit).
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import anchor_args, chosen, seed_spread  # noqa: E402


def fixtures() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(reference, generated) feature sets: Gaussian mixtures of several widths and sizes."""
    g = np.random.default_rng(2024)

    def mixture(centres, n, scale):
        k, d = centres.shape
        return centres[g.integers(0, k, n)] + scale * g.standard_normal((n, d))

    out = {}
    for name, d, n_ref, n_gen, shift in (("mixture-64", 64, 2000, 1000, 0.0),
                                         ("mixture-128", 128, 1500, 1500, 0.2),
                                         ("mixture-192", 192, 1000, 2000, 0.1)):
        centres = 3.0 * g.standard_normal((10, d))
        out[name] = (mixture(centres, n_ref, 1.0), mixture(centres + shift, n_gen, 1.2))
    return out


def load_dgm(path: str):
    spec = importlib.util.spec_from_file_location("dgm_fd", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.tqdm = lambda *a, **k: types.SimpleNamespace(update=lambda *_: None)  # quiet
    return mod


class _SeededNumpy:
    """``numpy`` as dgm-eval's module sees it, with ``random.default_rng()`` seeded."""

    def __init__(self, seed: int):
        self.random = types.SimpleNamespace(default_rng=lambda *_: np.random.default_rng(seed))

    def __getattr__(self, name):
        return getattr(np, name)


def dgm_fd_inf(mod, real, fake, seed: int | None) -> float:
    """dgm-eval's compute_FD_infinity; with ``seed`` its generator draws from default_rng(seed)."""
    if seed is None:
        return float(mod.compute_FD_infinity(real, fake))
    saved = mod.np
    mod.np = _SeededNumpy(seed)
    try:
        return float(mod.compute_FD_infinity(real, fake))
    finally:
        mod.np = saved


def main(argv=None) -> int:
    args = anchor_args(__doc__.splitlines()[0], "copy of dgm_eval/metrics/fd.py", argv)
    from evalkit.metrics.frechet import fd_inf

    mod = load_dgm(args.dgm)
    fx = fixtures()
    names = chosen(fx, args.fixtures)
    print("| fixture | evalkit mean ± se | dgm-eval mean ± se | z | sd evalkit | sd dgm-eval "
          "| sd ratio | same draws: max rel. diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        real, fake = fx[name]
        ours = np.array([fd_inf(real, fake, seed=s, device="cpu")["fd_inf"] for s in range(args.seeds)])
        theirs = np.array([dgm_fd_inf(mod, real, fake, None) for _ in range(args.seeds)])
        paired = np.array([dgm_fd_inf(mod, real, fake, s) for s in range(args.seeds)])
        same = float(np.max(np.abs(paired - ours) / np.abs(paired)))
        st = seed_spread(ours, theirs)
        sa, sb, se_a, se_b, z = st["sd_a"], st["sd_b"], st["se_a"], st["se_b"], st["z"]
        print(f"| {name} (D={real.shape[1]}, Nr={len(real)}, Ng={len(fake)}) "
              f"| {ours.mean():.4f} ± {se_a:.4f} | {theirs.mean():.4f} ± {se_b:.4f} | {z:+.2f} "
              f"| {sa:.4f} | {sb:.4f} | {sa / sb:.2f} | {same:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
