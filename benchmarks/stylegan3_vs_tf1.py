"""Inception ``--resize stylegan3`` (EDM2 / StyleGAN3 detector) vs ``--resize tf1`` (ADM / TTUR).

Both sample source position ``j · W / 299``; StyleGAN's TorchScript detector goes through
``affine_grid``/``grid_sample`` in float32, TF1's ``ResizeBilinear`` computes the position
directly and interpolates x then y. This script measures what that leaves, on random
FID-Inception weights in pytorch-fid's format (BatchNorm statistics randomised so the features
are not degenerate) and real-looking images (coarse blobs plus noise) at several sizes:

* ``pixels``: max |Δ| of the resized images on the [0, 255] scale;
* ``features``: max |Δ| of pool3 between the two modes, over the largest |feature|;
* ``float32 round-off``: the same quantity between the float32 network and a float64 copy on the
  same (stylegan3) input: the scale below which a difference is float32 noise;
* ``FD``: the Fréchet distance between two image sets (same size, different seeds) with each
  mode, and their relative difference.

    python benchmarks/stylegan3_vs_tf1.py --n 24 --sizes 32,64,256,512
"""
from __future__ import annotations

import argparse
import copy
import sys

import numpy as np
import torch


def images(n: int, size: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    k = max(size // 8, 1)
    coarse = rng.integers(0, 256, (n, 3, k, k)).astype(np.float64)
    up = np.kron(coarse, np.ones((1, 1, 8, 8)))[:, :, :size, :size]
    return torch.from_numpy(np.clip(up + rng.normal(0, 12, up.shape), 0, 255).astype(np.uint8)).float()


def random_net():
    from evalkit.encoders import inception as I
    from evalkit.encoders import weights as W

    net = W.build_module(I.FIDInceptionV3, random_init=True, init=I._init_random, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return net.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="images per set")
    ap.add_argument("--sizes", default="32,64,256,512")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from evalkit.images.resize import stylegan3_bilinear, tf1_bilinear
    from evalkit.metrics.frechet import fd

    net = random_net()
    net64 = copy.deepcopy(net).double()

    def pool3(x, model=net):
        with torch.no_grad():
            return model(x)[0].double()

    print("| size | pixels max abs diff (of 255) | features max abs diff / scale | float32 round-off of "
          "the features | FD tf1 | FD stylegan3 | FD rel. diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for s in (int(v) for v in args.sizes.split(",")):
        a, b = images(args.n, s, 10 + s), images(args.n, s, 20 + s)
        ta, sa = tf1_bilinear(a, 299), stylegan3_bilinear(a, 299)
        tb, sb = tf1_bilinear(b, 299), stylegan3_bilinear(b, 299)
        px = float(max((ta - sa).abs().max(), (tb - sb).abs().max()))
        fa_t, fa_s = pool3((ta - 128) / 128), pool3((sa - 128) / 128)
        fb_t, fb_s = pool3((tb - 128) / 128), pool3((sb - 128) / 128)
        scale = float(fa_s.abs().max())
        feat = float(max((fa_t - fa_s).abs().max(), (fb_t - fb_s).abs().max())) / scale
        f64 = pool3(((sa - 128) / 128).double(), net64)
        roundoff = float((fa_s - f64).abs().max()) / scale
        fd_t = fd(fa_t.numpy(), fb_t.numpy(), device="cpu")["fd"]
        fd_s = fd(fa_s.numpy(), fb_s.numpy(), device="cpu")["fd"]
        print(f"| {s} | {px:.2e} | {feat:.1e} | {roundoff:.1e} | {fd_t:.6g} | {fd_s:.6g} "
              f"| {abs(fd_t - fd_s) / fd_s:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
