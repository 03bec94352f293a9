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
"""
from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from evalkit.errors import InputError, UnknownNameError
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
        if self.not_run:
            fields["not_run"] = dict(self.not_run)
        if complete:
            return fields, None
        return fields, (f"PROTOCOL {p.name.upper()} EXPECTS {p.n_samples} SAMPLES, GOT {n}: the numbers "
                "are NOT comparable with the published tables (the record is marked "
                "protocol.complete = false)")


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
                     ref: str | None = None, has_test: bool = False) -> ResolvedProtocol:
    """Apply protocol ``name`` to the user's options.

    Args:
        options: the extraction options as parsed (defaults included).
        explicit: names of the options the user set on the command line (``encoder``, ``arch``,
            ``resize``, ``metrics``, ``nsample``): those must agree with the protocol.
        metrics, nsample, ref: the user's values (None: not given).
        has_test: whether ``--test`` was given (metrics needing it are dropped otherwise).

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
    wanted = tuple(m for m in wanted if m not in not_run)
    chosen_ref = ref or p.reference
    if not chosen_ref:
        raise InputError(f"--protocol {p.name} has no published reference: pass --ref")
    resolved_options = replace(options, encoder=encoder, arch=options.arch or arch, resize=resize)
    return ResolvedProtocol(
        protocol=p, options=resolved_options, metrics=wanted,
        nsample=nsample if "nsample" in explicit and nsample is not None else p.n_samples,
        ref=chosen_ref, overrides={k: dict(v) for k, v in p.overrides.items()}, not_run=not_run)
