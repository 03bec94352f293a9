"""CLIPScore (Hessel et al. 2021): how well each generated image matches its prompt."""
from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.errors import MetricInputError
from evalkit.metrics._registry import Output, register_metric
from evalkit.metrics.primitives.common import check_points


def clip_scores(fake: Any, text: Any, *, weight: float = 100.0) -> np.ndarray:
    """Per-sample ``weight * max(cos(image_i, text_i), 0)`` in float64 (N values)."""
    n = check_points("clip_score", "generated", fake, 1)
    check_points("clip_score", "prompt", text, n, dim=np.shape(fake)[1])
    a = np.asarray(fake, dtype=np.float64)
    b = np.asarray(text, dtype=np.float64)
    if b.shape[0] != n:
        raise MetricInputError(f"clip_score: {b.shape[0]} prompt embeddings for {n} images")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    if (na == 0).any() or (nb == 0).any():
        raise MetricInputError("clip_score: an image or prompt embedding is all zeros")
    cos = np.einsum("ij,ij->i", a, b) / (na * nb)
    return weight * np.maximum(cos, 0.0)


@register_metric(
    Output("clip_score", "higher", "CLIPScore: mean of 100 x max(cos(image, prompt), 0) over the "
           "generated images (Hessel et al. 2021); needs --prompts and --encoder clip"),
    array="embedding", args=("fake", "text"), min_samples=1, position=140,
)
def clip_score(fake: Any, text: Any, *, weight: float = 100.0) -> dict[str, float]:
    """CLIPScore of generated images against their own prompts.

    Hessel, Holtzman, Forbes, Le Bras & Choi, "CLIPScore: A Reference-free Evaluation Metric for
    Image Captioning", EMNLP 2021: ``w * max(cos(E_image, E_text), 0)`` per pair, averaged over
    the pairs (the paper's w = 2.5; text-to-image work, and torchmetrics, use w = 100).
    Reference implementation: torchmetrics' ``CLIPScore`` (default model OpenAI ViT-L/14,
    evalkit's ``--encoder clip --arch ViT-L-14:openai``), which equals this whenever no pair
    has a negative cosine; torchmetrics clamps the *mean* at 0 instead of each pair (the paper's
    per-pair clamp is used here, so a pair cannot offset another). Embeddings are the CLIP
    image embedding (``embedding``) and the text embedding of each image's prompt (``text``);
    prompts longer than the text context are truncated keeping the end token when embedded
    (their count is in the record's ``samples.text.truncated``).

    Args:
        fake: N x E image embeddings.
        text: N x E text embeddings, row i the prompt of image i.
        weight: the factor w (100).

    Returns:
        ``{"clip_score": mean}``; higher is better.
    """
    return {"clip_score": float(np.mean(clip_scores(fake, text, weight=weight)))}
