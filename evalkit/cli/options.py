"""Click options shared by the commands that extract features (score, features, ref add)."""
from __future__ import annotations

import json

import click

from evalkit.encoders import (
    BUILTINS,
    get_encoder_spec,
    legacy_resize_encoders,
    resize_encoders,
    resize_modes,
)
from evalkit.errors import InputError
from evalkit.features.options import ExtractOptions, default_workers


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
        click.option("--resize", type=click.Choice(resize_modes()), default="clean",
                     show_default=True,
                     help=f"clean: PIL bicubic (clean-fid); legacy "
                          f"({', '.join(legacy_resize_encoders())}): pytorch-fid (inception), "
                          "dgm-eval's or timm's torchvision transform (others); tf1 "
                          f"({', '.join(resize_encoders('tf1'))}): the TF Inception graph's own "
                          f"resize (ADM, TTUR); stylegan3 ({', '.join(resize_encoders('stylegan3'))}): "
                          "StyleGAN's TorchScript detector's grid_sample resize (EDM2 FID); "
                          f"torch ({', '.join(resize_encoders('torch'))}): "
                          "F.interpolate bicubic antialias (EDM2 FD_DINOv2)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Images per encoder forward pass (speed and memory; features agree "
                          "to float round-off)."),
        click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:i]"),
        click.option("--workers", type=click.IntRange(min=0), default=default_workers(),
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
        click.option("--image-column", default=None, metavar="NAME",
                     help="Parquet / Arrow sources: the column of images (default: found)."),
        click.option("--label-column", default=None, metavar="NAME",
                     help="Parquet / Arrow sources: the column of integer labels."),
        click.option("--prompt-column", default=None, metavar="NAME",
                     help="Parquet / Arrow sources: the column of text prompts."),
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
        quiet=kwargs.pop("quiet"), image_column=kwargs.pop("image_column"),
        label_column=kwargs.pop("label_column"), prompt_column=kwargs.pop("prompt_column"),
    )


def with_pretrained(encoder: str, arch: str | None, tag: str | None) -> str | None:
    """``--arch A --pretrained T`` as one arch name: ``A:T`` for open_clip, ``A.T`` for timm."""
    if not tag:
        return arch
    if encoder not in ("clip", "timm"):
        raise InputError(f"--pretrained is for --encoder clip or timm, not {encoder}")
    sep = ":" if encoder == "clip" else "."
    base = arch or get_encoder_spec(encoder).default_arch.split(sep)[0]
    if sep in base:
        raise InputError(f"--arch {base} already names a pretrained tag; drop --pretrained {tag}")
    return f"{base}{sep}{tag}"


def generator_options(fn):
    """Add the options that make a generator the source of ``score``."""
    opts = [
        click.option("--generator", default=None, metavar="PKG.MODULE:FUNCTION",
                     help="Sample from fn(batch_size, *, seed, labels=None) -> B×3×H×W uint8 "
                          "or float [0, 1] images instead of reading SAMPLES."),
        click.option("--generator-args", default=None, metavar="JSON",
                     help="Keyword arguments (a JSON object) passed to every generator call."),
        click.option("--num-samples", type=click.IntRange(min=1), default=None,
                     help="How many images the --generator makes."),
        click.option("--labels", "label_mode", type=click.Choice(["random", "balanced"]),
                     default=None, help="Class labels for a class-conditional --generator: "
                     "uniform draws (ADM, EDM2) or exactly N/classes each (MAR)."),
        click.option("--num-classes", type=click.IntRange(min=1), default=None,
                     help="Classes for --labels (default: the generator's num_classes)."),
        click.option("--save-samples", type=click.IntRange(min=0), default=0,
                     help="Write a grid PNG and the first K samples (to --samples-dir)."),
        click.option("--samples-dir", default=None, type=click.Path(file_okay=False),
                     help="Where --save-samples writes (default: samples/ beside --out)."),
        click.option("--step", type=click.IntRange(min=0), default=None,
                     help="Training step recorded in the record (for `evalkit track`)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def generator_kwargs(kwargs: dict) -> dict:
    """Pop the generator options out of a command's kwargs, as :func:`evalkit.score` takes them."""
    text = kwargs.pop("generator_args")
    args = None
    if text is not None:
        try:
            args = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON ({exc})", param_hint="--generator-args") from None
        if not isinstance(args, dict):
            raise click.BadParameter("expected a JSON object", param_hint="--generator-args")
    return {"generator": kwargs.pop("generator"), "generator_args": args,
            "num_samples": kwargs.pop("num_samples"), "labels": kwargs.pop("label_mode"),
            "num_classes": kwargs.pop("num_classes"), "save_samples": kwargs.pop("save_samples"),
            "samples_dir": kwargs.pop("samples_dir"), "step": kwargs.pop("step")}
