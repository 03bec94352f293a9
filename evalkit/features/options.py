"""Frozen run options handed from the CLI (or the Python API) to the engine. No I/O here."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ExtractOptions:
    """How a source becomes features: which encoder, how to run it, where to cache."""

    encoder: str = "dinov2"
    arch: str | None = None
    weights: str | None = None
    resize: str = "clean"  # "clean" | "legacy" (Inception: pytorch-fid's in-network bilinear) | "tf1"
    batch_size: int = 64
    device: str = "auto"
    workers: int = 2
    precision: str = "fp32"  # fp32 | tf32 | bf16 | fp16
    cache_dir: str | None = None
    use_cache: bool = True
    skip_bad: bool = False
    quiet: bool = False

    def as_dict(self) -> dict:
        return asdict(self)
