"""Frozen run options handed from the CLI (or the Python API) to the engine. No I/O here."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field


def default_workers() -> int:
    """Decode workers when none are asked for: one per core, at most 8 (the CLI and the
    Python API share this default)."""
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class ExtractOptions:
    """How a source becomes features: which encoder, how to run it, where to cache."""

    encoder: str = "dinov2"
    arch: str | None = None
    weights: str | None = None
    # "clean" | "legacy" | "tf1" | "stylegan3" | "torch": the reference tool's own resize, for
    # the encoders whose declaration lists it (evalkit.encoders.BUILTINS[...].resizes):
    # pytorch-fid's in-network bilinear (inception legacy), dgm-eval's / timm's torchvision
    # transform (legacy, others), the TF Inception graph's ResizeBilinear (inception tf1),
    # StyleGAN's TorchScript detector's grid_sample (inception stylegan3), EDM2's F.interpolate
    # bicubic antialias (dinov2 torch)
    resize: str = "clean"
    batch_size: int = 64
    device: str = "auto"
    workers: int = field(default_factory=default_workers)
    precision: str = "fp32"  # fp32 | tf32 | bf16 | fp16
    cache_dir: str | None = None
    use_cache: bool = True
    skip_bad: bool = False
    quiet: bool = False
    image_column: str | None = None  # Parquet / Arrow sources: None finds them automatically
    label_column: str | None = None
    prompt_column: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)
