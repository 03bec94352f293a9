"""FLS / FLS-POG: evalkit against dgm-eval's own code, statistically, on synthetic fixtures.

dgm-eval is not installable (its FLS hard-codes ``.cuda()``), so this is a script, not a test.
Point it at a CPU copy of ``dgm_eval/metrics/fls.py`` (``.cuda()`` removed, ``device="cuda"`` ->
``"cpu"``), kept OUTSIDE the repository::

    git -C <dgm-eval checkout> show HEAD:dgm_eval/metrics/fls.py \
        | sed -e 's/\\.cuda()//g' -e 's/device="cuda"/device="cpu"/' > /tmp/dgm/dgm_fls.py
    python benchmarks/fls_vs_dgm_eval.py --dgm /tmp/dgm/dgm_fls.py --seeds 20

For every fixture and seed both sides draw their own subsets (dgm-eval: its ``__main__``'s draws
from the global numpy RNG seeded with the seed; evalkit: ``fls(seed=...)``), so each side's
spread over seeds is its subset-draw noise. The table prints both means, their standard errors,
``z`` = difference / combined standard error, the difference in anchor standard deviations and
the ratio of the two spreads (a noisier estimator would show a ratio well above 1).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import anchor_args, chosen, seed_spread  # noqa: E402


def fixtures(d: int = 32) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(real, fake, test) feature sets; sizes exceed the subset size so draws vary with the seed."""
    g = np.random.default_rng(12345)
    nr, nt, ng = 900, 500, 500

    def gauss(n, scale=1.0, shift=0.0):
        return scale * g.standard_normal((n, d)) + shift

    real, test = gauss(nr), gauss(nt)
    out = {
        "same": (real, gauss(ng), test),
        "wide+shift": (real, gauss(ng, 1.3, 0.3), test),
        "narrow": (real, gauss(ng, 0.6), test),
        "memorised": (real, real[g.choice(nr, ng)] + 0.05 * g.standard_normal((ng, d)), test),
        "collapsed": (real, gauss(8)[g.integers(0, 8, ng)] + 0.2 * g.standard_normal((ng, d)), test),
    }
    # anisotropic, offset features (standardisation and float32 rounding matter)
    col = 10.0 ** np.linspace(-2, 2, d)
    off = 50.0
    aniso = [x * col + off for x in (gauss(nr), gauss(ng, 1.2), gauss(nt))]
    out["anisotropic"] = (aniso[0], aniso[1], aniso[2])
    # heavy tails: Student-t(3) features
    out["heavy-tails"] = tuple(g.standard_t(3, size=(n, d)) for n in (nr, ng, nt))
    # more dimensions than the subset has samples per dimension
    dd = 128
    out["wide-D"] = tuple(g.standard_normal((n, dd)) for n in (nr, ng, nt))
    # the shape of the fixture where the spread over seeds was reported 3.3x dgm-eval's: a
    # 10-component mixture, D = 192, N = 1,000 reference, samples and test
    centres = 3.0 * g.standard_normal((10, 192))

    def mixture(n, scale=1.0):
        return centres[g.integers(0, 10, n)] + scale * g.standard_normal((n, 192))

    out["mixture-192"] = (mixture(1000), mixture(1000, 1.2), mixture(1000))
    return out


def load_dgm(path: str):
    spec = importlib.util.spec_from_file_location("dgm_fls", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def dgm_run(mod, real, fake, test, seed: int, reduced: int = 10000) -> tuple[float, float]:
    """dgm-eval's ``__main__`` draws (global numpy RNG) and its compute_fls / compute_fls_overfit."""
    np.random.seed(seed)
    n = min(reduced, real.shape[0] // 2, test.shape[0], fake.shape[0])
    test_r = test[np.random.choice(test.shape[0], n, replace=False)]
    gen_r = fake[np.random.choice(fake.shape[0], n, replace=False)]
    train_r = real[np.random.choice(real.shape[0], 2 * n, replace=False)]
    train_r, base_r = train_r[:n], train_r[n:]
    torch.manual_seed(seed)
    fls = mod.compute_fls(train_r, base_r, test_r, gen_r)
    pog = mod.compute_fls_overfit(train_r, base_r, test_r, gen_r)
    return float(fls), float(pog)


def main(argv=None) -> int:
    args = anchor_args(__doc__.splitlines()[0], "CPU copy of dgm_eval/metrics/fls.py", argv)
    from evalkit.metrics.fls import fls

    mod = load_dgm(args.dgm)
    fx = fixtures()
    names = chosen(fx, args.fixtures)
    print("| fixture | key | evalkit mean ± se | dgm-eval mean ± se | z | diff / anchor sd "
          "| sd evalkit / sd dgm-eval |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        real, fake, test = (x.astype(np.float32) for x in fx[name])
        ours = np.array([list(fls(real, fake, test, seed=s, device="cpu").values())
                         for s in range(args.seeds)])
        theirs = np.array([dgm_run(mod, real, fake, test, s) for s in range(args.seeds)])
        for j, key in enumerate(("fls", "fls_pog")):
            a, b = ours[:, j], theirs[:, j]
            st = seed_spread(a, b)
            se_a, se_b, z = st["se_a"], st["se_b"], st["z"]
            sd = b.std(ddof=1)
            rel = (a.mean() - b.mean()) / sd if sd > 0 else 0.0
            spread = a.std(ddof=1) / sd if sd > 0 else float("nan")
            print(f"| {name} | {key} | {a.mean():.4f} ± {se_a:.4f} | {b.mean():.4f} ± {se_b:.4f} "
                  f"| {z:+.2f} | {rel:+.2f} | {spread:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
