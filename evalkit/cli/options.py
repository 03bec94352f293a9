"""Click options shared by the commands that extract features (score, features, ref add)."""
from __future__ import annotations

import os

import click

from evalkit.encoders import BUILTINS, legacy_resize_encoders
from evalkit.features.options import ExtractOptions


def extract_options(fn):
    """Add the encoder/extraction options; the command receives them as keyword arguments."""
    opts = [
        click.option("--encoder", default="dinov2", show_default=True,
                     help=" | ".join(BUILTINS) + " | a plugin (`evalkit encoders`)."),
        click.option("--arch", default=None,
                     help="Encoder variant, e.g. vitl14, ViT-L-14 (clip), convnext_small.fb_in1k (timm)."),
        click.option("--pretrained", default=None,
                     help="Pretrained tag of --arch: open_clip (clip) or timm (timm) weights, "
                          "e.g. laion2b_s34b_b79k."),
        click.option("--weights", default=None, type=click.Path(dir_okay=False),
                     help="Local weights file (official checkpoint formats)."),
        click.option("--resize", type=click.Choice(["clean", "legacy"]), default="clean",
                     show_default=True,
                     help=f"clean: PIL bicubic (clean-fid); legacy "
                          f"({', '.join(legacy_resize_encoders())}): pytorch-fid (inception), "
                          "dgm-eval's or timm's torchvision transform (others)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Images per encoder forward pass (speed and memory; features agree "
                          "to float round-off)."),
        click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:i]"),
        click.option("--workers", type=click.IntRange(min=0), default=min(8, os.cpu_count() or 1),
                     show_default=True, help="Data-loading worker processes."),
        click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16", "fp16"]),
                     default="fp32", show_default=True,
                     help="fp32: strict (no TF32 on CUDA); tf32: TF32 convs/matmuls on CUDA; "
                          "bf16/fp16: autocast."),
        click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
                     help="Feature cache folder (default: $EVALKIT_CACHE_DIR or ~/.cache/evalkit)."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the feature cache."),
        click.option("--skip-bad", is_flag=True,
                     help="Skip unreadable images with a warning (counted in the record)."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def options_from_kwargs(kwargs: dict) -> ExtractOptions:
    """Pop the extraction options out of a command's kwargs into an ExtractOptions."""
    encoder = kwargs.pop("encoder")
    return ExtractOptions(
        encoder=encoder, arch=with_pretrained(encoder, kwargs.pop("arch"), kwargs.pop("pretrained")),
        weights=kwargs.pop("weights"),
        resize=kwargs.pop("resize"), batch_size=kwargs.pop("batch_size"),
        device=kwargs.pop("device"), workers=kwargs.pop("workers"),
        precision=kwargs.pop("precision"), cache_dir=kwargs.pop("cache_dir"),
        use_cache=not kwargs.pop("no_cache"), skip_bad=kwargs.pop("skip_bad"),
        quiet=kwargs.pop("quiet"),
    )


def with_pretrained(encoder: str, arch: str | None, tag: str | None) -> str | None:
    """``--arch A --pretrained T`` as one arch name: ``A:T`` for open_clip, ``A.T`` for timm."""
    if not tag:
        return arch
    from evalkit.encoders import get_encoder_spec
    from evalkit.errors import InputError

    if encoder not in ("clip", "timm"):
        raise InputError(f"--pretrained is for --encoder clip or timm, not {encoder}")
    sep = ":" if encoder == "clip" else "."
    base = arch or get_encoder_spec(encoder).default_arch.split(sep)[0]
    if sep in base:
        raise InputError(f"--arch {base} already names a pretrained tag; drop --pretrained {tag}")
    return f"{base}{sep}{tag}"
