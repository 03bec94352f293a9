"""The resize at the start of StyleGAN's TorchScript Inception detector, for the tests.

NVlabs' ``inception-2015-12-05.pt`` (StyleGAN2-ADA) / ``.pkl`` (StyleGAN3, loaded by EDM2's
``calculate_metrics.py``) is not available offline; its forward, as printed by TorchScript
(``model.code``) and transcribed in public ports (e.g. miemie2013/stylegan2-ada-pytorch_m4
``inception_pytorch.py``; other copies keep the decompiled line
``torch.add_(_3, torch.sub(_5, torch.div(_6, 299)))``), starts with the operations below. Written
op for op from that code, independently of evalkit's implementation.
"""
from __future__ import annotations

import torch


def stylegan3_detector_resize(x: torch.Tensor) -> torch.Tensor:
    """The first lines of the forward of StyleGAN's TorchScript Inception detector
    (``inception-2015-12-05.pt``/``.pkl``) as its decompiled code reads: a float32 identity
    ``theta`` whose translations are shifted in place through ``select`` views, repeated over the
    batch, an affine grid at 299×299, a bilinear border-padded ``grid_sample``."""
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=torch.float32)
    torch.select(torch.select(theta, 0, 0), 0, 2).add_(
        torch.sub(torch.div(torch.select(torch.select(theta, 0, 0), 0, 0), w),
                  torch.div(torch.select(torch.select(theta, 0, 0), 0, 0), 299)))
    torch.select(torch.select(theta, 0, 1), 0, 2).add_(
        torch.sub(torch.div(torch.select(torch.select(theta, 0, 1), 0, 1), h),
                  torch.div(torch.select(torch.select(theta, 0, 1), 0, 1), 299)))
    theta0 = torch.unsqueeze(theta.to(torch.float32), 0).repeat([b, 1, 1])
    grid = torch.nn.functional.affine_grid(theta0, [b, c, 299, 299], False)
    return torch.nn.functional.grid_sample(x.to(torch.float32), grid, "bilinear", "border", False)
