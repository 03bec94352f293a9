"""EncoderIdentity: what makes two feature arrays comparable, declared once.

Features from two runs can be compared only when the same network (name, arch), the same
weights (sha256 of the file loaded), the same preprocessing (``Preprocess.describe()``: size,
resize mode, crop, mean/std, in-network resize) and the same numeric precision produced them.
This frozen type is that identity; everything else derives from it:

- the feature-cache key (:func:`evalkit.features.cache.cache_key`, which also hashes the
  version of the encoder's declared output set, ``Builtin.outputs_version``: which arrays an
  entry holds is a property of the cache entry, not of the features' comparability, so it is
  not a field here and feature files made before an output was added still compare equal),
- the reference store's entry file name and matching (:mod:`evalkit.refs.manifest`),
- the ``encoder`` field of feature-file meta and result records,
- the encoder part of a record's protocol (:func:`evalkit.results.record.protocol_of`).

It is produced in one place: :func:`encoder_identity` (from run options, without building
a model; :func:`identity_for` and :func:`local_identity` are its downloading and local-only
forms), or :meth:`EncoderIdentity.of_encoder` for an encoder already built (the in-training
``Evaluator``). :meth:`EncoderIdentity.from_dict` reads the stored forms (meta, records and
reference manifests, including the older spelling ``encoder`` for ``name``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from evalkit import encoders
from evalkit.encoders.spec import WeightsSpec
from evalkit.encoders.weights import file_sha256, known_sha256, resolve_weights

IDENTITY_SCHEMA = 1


@dataclass(frozen=True)
class EncoderIdentity:
    """The identity of an encoder's features.

    Attributes:
        name: registered encoder name (``inception``, ``dinov2``, ``clip``, a plugin...).
        arch: the variant (``vitl14``; for ``clip`` the open_clip model name, with its
            pretrained tag after ``:`` when one was given).
        weights_sha256: sha256 hex of the weights file loaded (None: a weight-free encoder,
            or, only for a wanted identity, weights not found on this machine).
        preprocess: ``Preprocess.describe()`` JSON (size, resize mode, crop, mean/std,
            in-network resize) — ``--resize legacy`` shows up here.
        precision: ``fp32`` | ``tf32`` | ``bf16`` | ``fp16`` (the modes change numbers).
    """

    name: str
    arch: str | None = None
    weights_sha256: str | None = None
    preprocess: str | None = None
    precision: str = "fp32"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored in meta, records and reference manifests."""
        return asdict(self)

    def key(self) -> str:
        """sha256 hex of the canonical JSON of every field (and the identity schema)."""
        payload = dict(self.as_dict(), schema=IDENTITY_SCHEMA)
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def with_precision(self, precision: str) -> EncoderIdentity:
        return replace(self, precision=precision)

    def describe(self) -> str:
        """``name/arch`` plus a short weights digest, for messages."""
        weights = f" weights {self.weights_sha256[:8]}" if self.weights_sha256 else ""
        return f"{self.name}/{self.arch or 'default'}{weights} {self.precision}"

    def differences(self, other: EncoderIdentity) -> list[str]:
        """``field: a vs b`` for every field that differs."""
        return [f"{f.name}: {getattr(self, f.name)} vs {getattr(other, f.name)}"
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EncoderIdentity | None:
        """Read a stored identity (None when ``data`` names no encoder).

        Accepts the older spelling ``encoder`` for ``name`` (reference manifests before this
        type) and a ``preprocessing`` alias; a missing precision reads as ``fp32``, the only
        mode older files were written in by default. Unknown fields are ignored.
        """
        if not isinstance(data, dict):
            return None
        name = data.get("name") or data.get("encoder")
        if isinstance(name, dict):  # a whole meta dict was passed
            return cls.from_dict(name)
        if not name:
            return None
        pre = data.get("preprocess", data.get("preprocessing"))
        if pre is not None and not isinstance(pre, str):
            pre = json.dumps(pre, sort_keys=True)
        return cls(name=str(name), arch=data.get("arch"),
                   weights_sha256=data.get("weights_sha256"), preprocess=pre,
                   precision=str(data.get("precision") or "fp32"))

    @classmethod
    def of_encoder(cls, encoder: Any, precision: str = "fp32") -> EncoderIdentity:
        """The identity of a built encoder module (name, arch, weights_sha256, preprocess)."""
        pre = encoder.preprocess
        return cls(name=encoder.name, arch=encoder.arch or None,
                   weights_sha256=encoder.weights_sha256,
                   preprocess=pre.describe() if hasattr(pre, "describe") else pre,
                   precision=precision)


def encoder_identity(options: Any, *, download: bool = True) -> tuple[EncoderIdentity, bool]:
    """The identity that extracting with ``options`` (an ExtractOptions) gives, no model built:
    ``(identity, weights_known)``.

    ``weights_sha256`` is the sha256 of the file the encoder would load: ``--weights``, else
    the torch hub / Hugging Face caches (digests remembered per path, size and mtime), else
    the full sha256 the weights declare, else (``download``) the file downloaded when online.
    Without ``download``, weights found nowhere leave ``weights_sha256`` None and
    ``weights_known`` False: such an identity looks up stored references by its other fields.
    Weight-free encoders have ``weights_sha256`` None and ``weights_known`` True.

    Raises:
        InputError: unknown encoder or arch, a Python package the encoder needs is not
            installed, ``resize`` not valid for this encoder, a ``--weights`` file that does
            not exist.
        OfflineError: ``download`` and the weights are nowhere on this machine and cannot be
            downloaded.
    """
    encoders.check_packages(options.encoder)  # before any weights are looked for
    spec = encoders.get_encoder_spec(options.encoder)
    arch = options.arch or spec.default_arch
    pre = encoders.encoder_preprocess(options.encoder, arch, options.resize)
    wspec = encoders.encoder_weights_spec(options.encoder, arch)
    sha = None
    if options.weights:
        sha = file_sha256(resolve_weights(options.encoder,
                                          wspec or WeightsSpec(filename=str(options.weights)),
                                          options.weights))
    elif wspec is not None:
        sha = known_sha256(wspec)
        if sha is None and download:
            sha = file_sha256(resolve_weights(options.encoder, wspec, None))
    ident = EncoderIdentity(name=options.encoder, arch=arch, weights_sha256=sha,
                            preprocess=_describe(pre), precision=options.precision)
    return ident, sha is not None or (wspec is None and not options.weights)


def identity_for(options: Any) -> EncoderIdentity:
    """:func:`encoder_identity`, downloading the weights when they are nowhere on this machine."""
    return encoder_identity(options, download=True)[0]


def local_identity(options: Any) -> tuple[EncoderIdentity, bool]:
    """:func:`encoder_identity` without downloading: ``(identity, weights_known)``."""
    return encoder_identity(options, download=False)


IDENTITY_FIELDS = tuple(f.name for f in fields(EncoderIdentity))


def _describe(preprocess: Any) -> Any:
    return preprocess.describe() if hasattr(preprocess, "describe") else preprocess
