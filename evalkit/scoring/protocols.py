"""Paper protocols: the encoder, resize, sample count, metrics and reference of a published
evaluation, so that a number is comparable with the tables that cite it.

:func:`resolve_protocol` is pure: (protocol name, the user's options) -> resolved options plus
the fields the result record carries under ``protocol``. Options the user set explicitly that
contradict the protocol are an input error (exit 2), never silently overridden.

Protocols (details and the known differences from the originals in README "Paper protocols"):

* ``adm`` - guided-diffusion's evaluator (Dhariwal & Nichol 2021): Inception FID and sFID
  against the statistics published inside the ADM reference batch, Inception Score, and
  precision/recall with k = 3 against the batch's 10,000 images, 50,000 samples.
* ``edm2`` - EDM2's calculate_metrics.py (Karras et al. 2024): FD of Inception (FID) or of
  DINOv2-L/14 (FD_DINOv2) against EDM2's published statistics, a 50,000-image subset.
* ``dgm-eval`` - layer6ai-labs/dgm-eval (Stein et al. 2023): DINOv2-L/14 features and its
  metric set (FD, FD∞, KD, PRDC k = 5, AuthPct, C_T, FLS, Vendi, SW), up to 50,000 images.
* ``coco30k`` - the text-to-image COCO-30k evaluation (one image per caption for 30,000
  captions): FD on CLIP features (FD_CLIP) as clean-fid's ``model_name="clip_vit_b_32"``
  computes it, and clip_score when the captions are given.
"""
from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from evalkit.errors import InputError, UnknownNameError
from evalkit.features.featureset import FeatureSet
from evalkit.features.options import ExtractOptions

_ADM_PR = {"nearest_k": 3, "max_samples": 50000, "convention": "adm"}


@dataclass(frozen=True)
class Protocol:
    """A published evaluation setting.

    Attributes:
        encoders: encoder name -> ``{"arch", "resize", "metrics"}``; the first is the default.
        n_samples: the number of generated samples the published numbers use.
        reference: default ``--ref`` (a catalog name), None when the user must give one.
        overrides: metric keyword arguments (e.g. ADM's k = 3 for precision/recall).
        published_stats: score ``fd``/``sfid`` against the statistics shipped inside the
            reference image batch (ADM) rather than the batch's own features.
        needs_test: metrics that need ``--test``; dropped (and listed) when there is none.
        differences: where evalkit's number can differ from the original tool's.
        conventions: metric -> the convention that produces it (recorded per number in
            ``protocol.conventions``).
        exact: metrics whose every convention is the original tool's (the numbers are
            comparable with the published tables up to the residual in ``differences``).
        features: the encoder output every metric reads as ``features`` (``projected``: the
            CLIP projection before normalisation), for sets with samples; a statistics-only
            reference is taken to hold statistics of that output (its dimension is checked).
        needs_prompts: metrics that need ``--prompts``; dropped (and listed) without them.
        reference_hint: what to pass as ``--ref`` when the protocol has no published one.
    """

    name: str
    description: str
    encoders: Mapping[str, Mapping[str, Any]]
    n_samples: int | None
    reference: str | None = None
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    published_stats: bool = False
    needs_test: tuple[str, ...] = ()
    differences: str = ""
    conventions: Mapping[str, str] = field(default_factory=dict)
    exact: tuple[str, ...] = ()
    features: str = "features"
    needs_prompts: tuple[str, ...] = ()
    reference_hint: str = ""


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add ``protocol`` (a duplicate name is refused)."""
    if protocol.name in PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    return protocol


_ADM_INCEPTION = ("TF Inception graph (pytorch-fid's weights file), TF1 ResizeBilinear from the "
                  "stored size, (x-128)/128")
register_protocol(Protocol(
    name="adm",
    description="guided-diffusion evaluator: Inception FID, sFID, IS, precision/recall (k=3)",
    encoders={"inception": {"resize": "tf1",
                            "metrics": ("fd", "sfid", "is", "precision", "recall")}},
    n_samples=50000, reference="imagenet256",
    overrides={"precision": _ADM_PR, "recall": _ADM_PR, "density": _ADM_PR, "coverage": _ADM_PR,
               "is": {"convention": "adm", "split_size": 5000}},
    published_stats=True,
    conventions={
        "fd": f"ADM: {_ADM_INCEPTION}; pool_3 vs the mu/sigma stored in the reference batch",
        "sfid": f"ADM: {_ADM_INCEPTION}; mixed_6/conv[..., :7] in HWC order vs mu_s/sigma_s",
        "is": "ADM: softmax(pool_3 @ W) without the bias, ordered splits of 5,000, mean",
        "precision": "ADM: k=3, squared float16 distances, '<=', 10,000-row blocks",
        "recall": "ADM: k=3, squared float16 distances, '<=', 10,000-row blocks"},
    exact=("fd", "sfid", "is", "precision", "recall"),
    differences="float32 round-off of the PyTorch port of the TF graph (features ~1e-6 "
                "relative); IS softmax/KL in float64 (ADM: float32); precision/recall: samples "
                "within one float16 ulp of their radius may fall either way (counted in "
                "details.precision._float16_borderline)"))

register_protocol(Protocol(
    name="edm2",
    description="EDM2 calculate_metrics.py: FID (Inception) or FD_DINOv2 vs EDM2 statistics",
    encoders={"inception": {"resize": "stylegan3", "metrics": ("fd",)},
              "dinov2": {"arch": "vitl14", "resize": "torch", "metrics": ("fd",)}},
    n_samples=50000, reference="edm2-img512",
    conventions={"fd": "EDM2: Inception: StyleGAN3's TorchScript detector on uint8 NCHW "
                       "(affine_grid/grid_sample at TF1's positions, border padding, "
                       "(x-128)/128); DINOv2-L/14: F.interpolate bicubic antialias to 224, "
                       "/255, ImageNet mean/std, CLS; statistics in float64"},
    exact=("fd",),
    differences="DINOv2: float32 round-off only (same torch resize and normalisation); "
                "Inception: the detector's own affine_grid/grid_sample resize (--resize "
                "stylegan3), the network is pytorch-fid's port of the same TF graph (features "
                "~1e-6 relative float32 round-off; not compared with the .pkl itself, which "
                "is not available offline); covariance centred (EDM2: raw second moments "
                "minus N mu mu^T, float64)"))

register_protocol(Protocol(
    name="dgm-eval",
    description="dgm-eval defaults: DINOv2-L/14 features and its metric set",
    encoders={"dinov2": {"arch": "vitl14", "resize": "clean",
                         "metrics": ("fd", "fd_inf", "kd", "precision", "recall", "density",
                                     "coverage", "authpct", "ct", "fls", "fls_pog", "vendi",
                                     "sw_approx")}},
    n_samples=50000, needs_test=("ct", "fls", "fls_pog"),
    differences="subsets seeded from --seed (dgm-eval: unseeded np.random); resize PIL bicubic "
                "on float32 (dgm-eval: torchvision PIL bicubic on uint8)"))


# COCO-30k: FD on CLIP features over one image per caption. The encoder is
# clean-fid's clip_vit_b_32 mode (cleanfid/clip_features.py: OpenAI CLIP ViT-B/32 through the
# `clip` package, `model.encode_image`, 512-d, not normalised; images resized by torchvision
# Resize(224, bicubic) on the PIL image + CenterCrop(224), /255, OpenAI mean/std), the FD_CLIP
# of Kynkäänniemi et al. ("The Role of ImageNet Classes in Fréchet Inception Distance", ICLR
# 2023), the FD_CLIP text-to-image papers report beside the Inception FID-30k.
COCO30K_N = 30000
register_protocol(Protocol(
    name="coco30k",
    description="COCO-30k text-to-image: FD_CLIP (clean-fid clip_vit_b_32) over 30,000 "
                "captions, one image each; clip_score with --prompts",
    encoders={"clip": {"arch": "ViT-B-32:openai", "resize": "clean",
                       "metrics": ("fd", "clip_score")}},
    n_samples=COCO30K_N, features="projected", needs_prompts=("clip_score",),
    conventions={
        "fd": "clean-fid clip_vit_b_32: OpenAI CLIP ViT-B/32 encode_image (512-d projection, "
              "not normalised), 224 px shorter side bicubic + centre crop, OpenAI mean/std; "
              "np.cov (N-1) statistics",
        "clip_score": "Hessel et al. 2021: 100 max(cos, 0) per image-caption pair, mean; the "
                      "same ViT-B/32 model's text tower (captions beyond 77 tokens truncated "
                      "keeping the end token)"},
    differences="resize: clean-fid's CLIP mode resizes the uint8 PIL image (torchvision "
                "Resize, PIL bicubic) and rounds to uint8; evalkit's clean bicubic works on "
                "float32 without rounding (features differ at the 1e-3 relative level); "
                "clean-fid runs the OpenAI model in float16 on a GPU (`clip.load`), evalkit in "
                "float32; clip_score uses ViT-B/32 (torchmetrics' default is ViT-L/14: score "
                "that with --encoder clip --arch ViT-L-14:openai --metrics clip_score)",
    reference_hint="clean-fid publishes no COCO statistics for clip_vit_b_32: pass --ref with "
                   "the reference images (e.g. the COCO val2014 images of the 30,000 captions, "
                   "a folder or zip), a feature file of them, or a mu/sigma .npz of the 512-d "
                   "projection (clean-fid's make_custom_stats(..., model_name='clip_vit_b_32'))"))


@dataclass(frozen=True)
class ResolvedProtocol:
    """What a protocol turns the user's options into."""

    protocol: Protocol
    options: ExtractOptions
    metrics: tuple[str, ...]
    nsample: int | None
    ref: str
    overrides: dict[str, dict[str, Any]]
    not_run: dict[str, str]

    def describe(self, n: int, published: Any = None) -> tuple[dict[str, Any], str | None]:
        """The record's ``protocol`` object for ``n`` scored samples, and a warning or None.

        ``complete`` is False when fewer samples than the protocol's count were scored: such a
        number is not comparable with the published tables (``leaderboard``/``check`` keep it
        apart). ``published`` is the statistics object fd/sfid were scored against, if any.
        """
        p = self.protocol
        complete = p.n_samples is None or n >= p.n_samples
        fields: dict[str, Any] = {
            "name": p.name, "encoder": self.options.encoder, "resize": self.options.resize,
            "metrics": list(self.metrics), "n_expected": p.n_samples, "complete": complete,
            "differences": p.differences,
            "conventions": {m: p.conventions.get(m, "evalkit") for m in self.metrics},
            "exact": [m for m in self.metrics if m in p.exact]}
        if published is not None:
            meta = getattr(published, "meta", {}) or {}
            fields["published_stats"] = {"n": getattr(published, "n", None),
                                         "made_by": meta.get("published"),
                                         "metrics": ["fd", "sfid"]}
        if p.features != "features":
            fields["features"] = p.features
        if self.not_run:
            fields["not_run"] = dict(self.not_run)
        if complete:
            return fields, None
        return fields, (f"PROTOCOL {p.name.upper()} EXPECTS {p.n_samples} SAMPLES, GOT {n}: the numbers "
                "are NOT comparable with the published tables (the record is marked "
                "protocol.complete = false)")


    def features_of(self, fs: FeatureSet | None) -> FeatureSet | None:
        """``fs`` with the protocol's encoder output as its ``features`` (``fs`` itself is not
        changed); statistics-only sets and protocols scoring ``features`` pass through.

        Raises:
            InputError: the set lacks that output (features of another encoder, or a feature
                file saved by an evalkit that did not store it: extract again from the images;
                cache entries made then are never served, their key is of another output set).
        """
        kind = self.protocol.features
        if fs is None or kind == "features" or not fs.has_samples:
            return fs
        if kind not in fs.arrays:
            raise InputError(f"{fs.source}: no '{kind}' array, which --protocol "
                             f"{self.protocol.name} scores ({self.options.encoder} "
                             f"{self.options.arch} features saved by an older evalkit? "
                             "extract them again from the images)")
        return replace(fs, arrays={**fs.arrays, "features": fs.arrays[kind]})


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; unknown names suggest close matches."""
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    close = difflib.get_close_matches(name, list(PROTOCOLS), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownNameError(f"--protocol: unknown protocol {name!r}{hint}; known: "
                           f"{', '.join(sorted(PROTOCOLS))}")


def resolve_protocol(name: str, options: ExtractOptions, *, explicit: Collection[str] = (),
                     metrics: tuple[str, ...] | None = None, nsample: int | None = None,
                     ref: str | None = None, has_test: bool = False,
                     has_prompts: bool = False) -> ResolvedProtocol:
    """Apply protocol ``name`` to the user's options.

    Args:
        options: the extraction options as parsed (defaults included).
        explicit: names of the options the user set on the command line (``encoder``, ``arch``,
            ``resize``, ``metrics``, ``nsample``): those must agree with the protocol.
        metrics, nsample, ref: the user's values (None: not given).
        has_test: whether ``--test`` was given (metrics needing it are dropped otherwise).
        has_prompts: whether ``--prompts`` were given (likewise).

    Raises:
        InputError: an explicit option contradicts the protocol, or no reference is known.
    """
    p = get_protocol(name)
    encoder = options.encoder if "encoder" in explicit else next(iter(p.encoders))
    if encoder not in p.encoders:
        raise InputError(f"--protocol {p.name} uses --encoder {' or '.join(p.encoders)}, "
                         f"not {encoder}")
    spec = p.encoders[encoder]
    arch = spec.get("arch")
    if "arch" in explicit and arch is not None and options.arch not in (None, arch):
        raise InputError(f"--protocol {p.name} uses --arch {arch} for {encoder}, not {options.arch}")
    resize = spec.get("resize", options.resize)
    if "resize" in explicit and options.resize != resize:
        raise InputError(f"--protocol {p.name} uses --resize {resize} for {encoder}, "
                         f"not {options.resize}")
    wanted = tuple(spec["metrics"])
    if metrics is not None:
        extra = [m for m in metrics if m not in wanted]
        if extra:
            raise InputError(f"--protocol {p.name} ({encoder}) computes {', '.join(wanted)}; "
                             f"--metrics {', '.join(extra)} is not part of it")
        wanted = tuple(metrics)
    not_run = {m: "needs --test (held-out real data)" for m in wanted
               if m in p.needs_test and not has_test}
    not_run.update({m: "needs --prompts (the caption of each sample)" for m in wanted
                    if m in p.needs_prompts and not has_prompts})
    wanted = tuple(m for m in wanted if m not in not_run)
    chosen_ref = ref or p.reference
    if not chosen_ref:
        raise InputError(f"--protocol {p.name} has no published reference: "
                         f"{p.reference_hint or 'pass --ref'}")
    resolved_options = replace(options, encoder=encoder, arch=options.arch or arch, resize=resize)
    return ResolvedProtocol(
        protocol=p, options=resolved_options, metrics=wanted,
        nsample=nsample if "nsample" in explicit and nsample is not None else p.n_samples,
        ref=chosen_ref, overrides={k: dict(v) for k, v in p.overrides.items()}, not_run=not_run)
