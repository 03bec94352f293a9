"""Per-generated-sample outputs for ``--per-sample`` CSVs and galleries (not a registered metric)."""
from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.metrics.memorization import authenticity
from evalkit.metrics.prdc import REALISM_K, realism_scores
from evalkit.metrics.primitives.common import check_points


def per_sample(
    real: Any,
    fake: Any,
    *,
    seed: int = 0,
    nearest_k: int = REALISM_K,
    max_samples: int = 10000,
    device: Any = None,
) -> dict[str, np.ndarray]:
    """Realism, nearest reference neighbour and authenticity of every generated sample.

    Same conventions as the metrics, so that the means of these columns are the recorded values:

    - ``realism``: the realism score of :func:`evalkit.metrics.prdc.realism` (reference subset of
      at most ``max_samples`` drawn with ``seed``, k = ``nearest_k``); its mean is ``realism``;
    - ``nn_index``: index into the *full* ``real`` array of the nearest reference sample;
    - ``nn_distance``: the exact Euclidean distance to it;
    - ``authentic``: the authenticity flag of :func:`evalkit.metrics.memorization.authpct`
      (100 x its mean is ``authpct``).

    Returns:
        dict of numpy arrays, each of length ``len(fake)``: ``realism`` (float64), ``nn_index``
        (int64), ``nn_distance`` (float64), ``authentic`` (bool).
    """
    check_points("per_sample", "reference", real, max(2, nearest_k + 1))
    check_points("per_sample", "generated", fake, 1, dim=real.shape[1])
    realism = realism_scores(
        real, fake, nearest_k=nearest_k, max_samples=max_samples, seed=seed, device=device,
        metric="per_sample",
    )
    idx, dist, authentic = authenticity(real, fake, device=device)
    return {
        "realism": realism.cpu().numpy(),
        "nn_index": idx.cpu().numpy().astype(np.int64),
        "nn_distance": dist.cpu().numpy(),
        "authentic": authentic.cpu().numpy().astype(bool),
    }
