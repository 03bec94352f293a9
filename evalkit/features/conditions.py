"""Conditions as data: attach each sample's prompt, and its CLIP text embedding, to a FeatureSet.

The prompts come from ``--prompts FILE`` (:func:`evalkit.images.conditions.read_prompts`) or
from a feature file that stored them with their text embeddings (`evalkit features --prompts`).
When the set was encoded with the ``clip`` encoder, the prompts are also encoded by the same
open_clip model's text tower into ``arrays["text"]`` (what ``clip_score`` compares with
``embedding``); ``meta["text"]`` records the model, the context length and how many prompts
were longer than it (truncated keeping the end token). Text embeddings are cached like image
features, keyed by the prompts, the model and its weights.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from evalkit.devices import resolve_device
from evalkit.errors import InputError
from evalkit.features.cache import FeatureCache
from evalkit.features.featureset import FeatureSet
from evalkit.features.options import ExtractOptions
from evalkit.images.conditions import read_prompts

TEXT_SCHEMA = 1


def attach_prompts(fs: FeatureSet, prompts: str | os.PathLike | Sequence[str] | None,
                   options: ExtractOptions | None = None, *, text_encoder: Any = None) -> FeatureSet:
    """``fs`` with ``prompts`` (a prompts file or one string per row) and, for a CLIP-encoded set,
    their text embeddings. ``fs`` itself is not changed.

    ``text_encoder``: an already built :class:`~evalkit.encoders.clip.CLIPTextEncoder` (tests,
    or a caller scoring many sets); by default it is built from the set's recorded arch and
    ``options.weights``.
    """
    options = options or ExtractOptions()
    if prompts is None:  # a feature file's stored prompts and text embeddings are kept as they are
        return fs
    if isinstance(prompts, (str, os.PathLike)):
        texts, origin = read_prompts(prompts, fs.files, fs.n), os.fspath(prompts)
    else:
        texts, origin = [str(p) for p in prompts], "<list>"
        if len(texts) != fs.n:
            raise InputError(f"prompts: {len(texts)} prompts for {fs.n} samples ({fs.source})")
    meta = dict(fs.meta, prompts={"source": origin, "n": len(texts), "unique": len(set(texts))})
    arrays = {k: v for k, v in fs.arrays.items() if k != "text"}
    out = replace(fs, arrays=arrays, meta=meta, prompts=list(texts))
    enc = fs.meta.get("encoder") if isinstance(fs.meta.get("encoder"), dict) else {}
    if enc.get("name") != "clip" and text_encoder is None:
        return out  # prompts travel; no text tower to embed them with
    emb, info = encode_prompts(out.prompts, enc, options, text_encoder)
    out.arrays["text"] = emb
    out.meta["text"] = info
    return out


def encode_prompts(prompts: list[str], encoder: dict, options: ExtractOptions,
                   text_encoder: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Text embeddings (N x E float32, L2-normalised) and what to record about them."""
    from evalkit.encoders.clip import build_clip_text  # open_clip only when prompts are encoded

    if text_encoder is None:
        text_encoder = build_clip_text(encoder.get("arch") or options.arch, options.weights)
        want = encoder.get("weights_sha256")
        if want and text_encoder.weights_sha256 and want != text_encoder.weights_sha256:
            raise InputError("prompts: the text tower's weights differ from the weights the image "
                             f"features were extracted with (sha256 {text_encoder.weights_sha256[:12]} "
                             f"vs {want[:12]}); pass the same --weights")
    tokens, truncated = text_encoder.tokenize(prompts)
    info = {"model": text_encoder.arch, "weights_sha256": text_encoder.weights_sha256,
            "context_length": text_encoder.context_length, "truncated": int(sum(truncated)),
            "truncation": "keep end token"}
    key = _text_key(prompts, info)
    cache = FeatureCache(options.cache_dir) if options.use_cache and key else None
    hit = cache.load(key) if cache else None
    if hit is not None and hit.arrays["features"].shape[0] == len(prompts):
        return hit.arrays["features"], info
    import torch

    device = resolve_device(options.device)
    model = text_encoder.to(device)
    parts = []
    with torch.inference_mode():
        for s in range(0, len(prompts), options.batch_size):
            parts.append(model(tokens[s:s + options.batch_size].to(device)).float().cpu().numpy())
    emb = np.concatenate(parts).astype(np.float32)
    if cache:
        cache.store(key, FeatureSet({"features": emb}, meta={"text": info}, source="prompts"))
    return emb, info


def _text_key(prompts: list[str], info: dict[str, Any]) -> str | None:
    """Cache key of the text embeddings (None: random weights, nothing to key on)."""
    if not info["weights_sha256"]:
        return None
    h = hashlib.sha256(json.dumps([TEXT_SCHEMA, info["model"], info["weights_sha256"],
                                   info["context_length"]]).encode())
    for p in prompts:
        h.update(p.encode("utf-8") + b"\0")
    return "text-" + h.hexdigest()
