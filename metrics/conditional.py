"""Per-condition metrics: diversity within each prompt, and the Fréchet distance within each class."""
from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.errors import MetricInputError
from evalkit.lazy import torch
from evalkit.metrics._registry import Output, register_metric
from evalkit.metrics.prdc import prdc
from evalkit.metrics.primitives.common import check_points, resolve_device, take_rows
from evalkit.metrics.vendi import vendi

# bytes of float64 one batch of per-class products may take (A B^T of every class in it)
_BATCH_BYTES = 1 << 28


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _by_label(ids: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """(label, row indices) of each distinct label."""
    order = np.argsort(ids, kind="stable")
    values, starts = np.unique(ids[order], return_index=True)
    return list(zip(values, np.split(order, starts[1:])))


def _groups(ids: Any, n: int, what: str, metric: str) -> list[np.ndarray]:
    ids = _as_numpy(ids)
    if ids.shape != (n,):
        raise MetricInputError(f"{metric}: {ids.shape[0] if ids.ndim else 0} {what} for {n} samples")
    order = np.argsort(ids, kind="stable")
    _, starts = np.unique(ids[order], return_index=True)
    return np.split(order, starts[1:])


@register_metric(
    Output("prompt_vendi", "higher", "mean over prompts of the Vendi score of each prompt's images "
           "(in-prompt diversity; Friedman & Dieng 2023, Jalali et al. 2024)",
           column=("per prompt", "vendi")),
    Output("prompt_similarity", "lower", "mean over prompts of the mean pairwise cosine similarity "
           "of each prompt's images", column=("per prompt", "similarity")),
    Output("prompt_vendi_all", "higher", "Vendi score of all generated images, every prompt "
           "together (for contrast with prompt_vendi)", select=False,
           column=("per prompt", "vendi_all")),
    args=("fake", "prompts"), min_samples=2, position=150,
)
def prompt_diversity(fake: Any, prompts: Any, *, q: float | str = 1,
                     device: Any = None) -> dict[str, Any]:
    """Diversity of the images generated for the same prompt, beside the overall diversity.

    A text-to-image model can score a high overall Vendi score (many prompts, many contents)
    while giving near-copies for each prompt. For each prompt with at least two images this
    computes the Vendi score of its images (Friedman & Dieng, TMLR 2023, the cosine kernel of
    :func:`evalkit.metrics.vendi.vendi`) and their mean pairwise cosine similarity (off-diagonal
    mean), and averages both over those prompts, every prompt weighing the same: the in-prompt
    (conditional) diversity of Jalali, Ospanov, Gohari & Farnia, "Conditional Vendi Score",
    2024, and of Hall et al.'s geographic-diversity study (DIG, 2023), whose per-prompt
    similarity averages are this ``prompt_similarity``. ``prompt_vendi_all`` is the Vendi score
    of all the images together. Prompts with a single image are left out (``_single`` counts
    them); ``_prompts`` counts the prompts used. With one image per prompt (COCO-30k) the two
    in-prompt values are None (not reported).

    Args:
        fake: N x D generated features.
        prompts: N prompt ids (equal ids: the same prompt).
        q: Vendi entropy order.
        device: torch device for the overall Vendi score.
    """
    n = check_points("prompt_vendi", "generated", fake, 2)
    x = _as_numpy(fake).astype(np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    norm[norm == 0] = 1
    u = x / norm
    vendis, sims, single = [], [], 0
    for idx in _groups(prompts, n, "prompt ids", "prompt_vendi"):
        m = len(idx)
        if m < 2:
            single += 1
            continue
        rows = u[idx]
        k = rows @ rows.T
        sims.append(float((k.sum() - np.trace(k)) / (m * (m - 1))))
        vendis.append(vendi(rows, q=q, device="cpu")["vendi"])
    if not vendis:  # one image per prompt (COCO-30k): no in-prompt diversity to report
        return {"prompt_vendi": None, "prompt_similarity": None,
                "prompt_vendi_all": vendi(fake, q=q, device=device)["vendi"],
                "_prompts": 0, "_single": single}
    return {"prompt_vendi": float(np.mean(vendis)), "prompt_similarity": float(np.mean(sims)),
            "prompt_vendi_all": vendi(fake, q=q, device=device)["vendi"],
            "_prompts": len(vendis), "_single": single}


def trace_sqrt_products(a: list[np.ndarray], b: list[np.ndarray], device: Any = None, *,
                        batched: bool | None = None) -> np.ndarray:
    """``tr sqrt(S_a S_b)`` for each pair of centred, scaled factors (``S = A^T A``), batched.

    The non-zero eigenvalues of ``A^T A B^T B`` are those of ``(A B^T)(A B^T)^T``, the squared
    singular values of the n_a x n_b matrix ``A B^T``; so the trace of the square root is the
    nuclear norm of ``A B^T`` — exact for every sample count, and small (n x n, not D x D) when
    classes have fewer samples than dimensions. On the CPU each class is one float64 product
    and LAPACK SVD; on a GPU the factors are zero-padded to a common row count (zero rows add
    zero singular values) and the SVDs run in float64 batches.
    """
    dev = resolve_device(device)
    out = np.zeros(len(a))
    if not a:
        return out
    if not (dev.type != "cpu" if batched is None else batched):  # LAPACK per class
        for i, (x, y) in enumerate(zip(a, b)):
            out[i] = np.linalg.svd(x @ y.T, compute_uv=False).sum()
        return out
    d = a[0].shape[1]
    na, nb = max(x.shape[0] for x in a), max(x.shape[0] for x in b)
    per = 8 * (na * d + nb * d + na * nb)
    step = max(1, _BATCH_BYTES // per)
    for s in range(0, len(a), step):
        chunk = range(s, min(s + step, len(a)))
        pa = torch.zeros(len(chunk), na, d, dtype=torch.float64, device=dev)
        pb = torch.zeros(len(chunk), nb, d, dtype=torch.float64, device=dev)
        for j, i in enumerate(chunk):
            pa[j, :a[i].shape[0]] = torch.as_tensor(a[i], device=dev)
            pb[j, :b[i].shape[0]] = torch.as_tensor(b[i], device=dev)
        sv = torch.linalg.svdvals(pa @ pb.transpose(1, 2))
        out[s:s + len(chunk)] = sv.sum(dim=1).cpu().numpy()
    return out


def _factor(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, centred rows / sqrt(n - 1), trace of the covariance) in float64."""
    mu = x.mean(axis=0)
    a = (x - mu) / np.sqrt(x.shape[0] - 1)
    return mu, a, float(np.einsum("ij,ij->", a, a))


@register_metric(
    Output("fd_per_class", "lower", "intra-class FD: mean over classes of the Fréchet distance "
           "between a class's generated and reference features (Miyato & Koyama 2018)",
           column=("per class", "fd")),
    args=("real", "fake", "labels", "real_labels"), min_samples=2, position=15,
)
def fd_per_class(real: Any, fake: Any, labels: Any, real_labels: Any, *,
                 device: Any = None) -> dict[str, Any]:
    """Intra-FID: the Fréchet distance of each class, averaged over classes.

    Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018 (intra-FID), also used
    for class-conditional ImageNet by Brock et al. (BigGAN) and Kang et al. (StudioGAN). Each
    class's FD is pytorch-fid's ``calculate_frechet_distance`` of that class's generated and
    reference features (covariances with N-1): ``|mu_g - mu_r|^2 + tr S_g + tr S_r
    - 2 tr sqrt(S_g S_r)``, the last term computed for all classes at once
    (:func:`trace_sqrt_products`, float64) instead of one ``scipy.linalg.sqrtm`` per class.

    A class needs two samples in each set; classes that have fewer, or appear in one set only,
    are left out of the mean and listed in ``_skipped`` (no class left: the value is None).
    Classes with no more samples than dimensions (in either set) have singular covariances:
    their FD is still the exact value
    of the formula (no ``eps`` offset is needed by this form), and they are listed in
    ``_rank_deficient`` so that a reader knows the estimate is a small-sample one. Every
    class's value is in ``_per_class``.

    Args:
        real, fake: reference and generated features (N x D).
        labels, real_labels: class label of each generated / reference row.
        device: torch device for the batched SVDs.
    """
    n = check_points("fd_per_class", "generated", fake, 2)
    m = check_points("fd_per_class", "reference", real, 2, dim=np.shape(fake)[1])
    x, y = _as_numpy(fake), _as_numpy(real)
    lab_f, lab_r = _as_numpy(labels), _as_numpy(real_labels)
    if lab_f.shape != (n,) or lab_r.shape != (m,):
        raise MetricInputError(f"fd_per_class: {lab_f.shape[0]} labels for {n} generated and "
                               f"{lab_r.shape[0]} for {m} reference samples")
    d = x.shape[1]
    rows_f = {g[0]: g[1] for g in _by_label(lab_f)}
    rows_r = {g[0]: g[1] for g in _by_label(lab_r)}
    empty = np.zeros(0, dtype=np.intp)
    names, fa, ra, base, skipped, deficient = [], [], [], [], [], []
    traces: list[float] = []
    held = 0
    for c in np.union1d(lab_f, lab_r):
        xf = x[rows_f.get(c, empty)].astype(np.float64)  # one class at a time in float64
        xr = y[rows_r.get(c, empty)].astype(np.float64)
        key = str(c.item() if hasattr(c, "item") else c)
        if len(xf) < 2 or len(xr) < 2:
            skipped.append(key)
            continue
        if len(xf) <= d or len(xr) <= d:
            deficient.append(key)
        (mu_f, a_f, t_f), (mu_r, a_r, t_r) = _factor(xf), _factor(xr)
        names.append(key)
        fa.append(a_f)
        ra.append(a_r)
        base.append(float(((mu_f - mu_r) ** 2).sum()) + t_f + t_r)
        held += a_f.nbytes + a_r.nbytes
        if held >= _BATCH_BYTES:  # bounded memory: the pending classes' traces now
            traces.extend(trace_sqrt_products(fa, ra, device))
            fa, ra, held = [], [], 0
    if not names:  # reported as not computed, with every class listed as skipped
        return {"fd_per_class": None, "_per_class": {}, "_skipped": skipped, "_rank_deficient": []}
    traces.extend(trace_sqrt_products(fa, ra, device))
    values = np.asarray(base) - 2 * np.asarray(traces)
    per = dict(zip(names, (float(v) for v in values)))
    return {"fd_per_class": float(np.mean(values)), "_per_class": per, "_skipped": skipped,
            "_rank_deficient": deficient}


@register_metric(
    Output("precision_per_class", "higher", "mean over classes of PRDC precision within each class",
           column=("per class", "precision")),
    Output("recall_per_class", "higher", "mean over classes of PRDC recall within each class",
           select=False, column=("per class", "recall")),
    Output("density_per_class", "higher", "mean over classes of PRDC density within each class",
           select=False, column=("per class", "density")),
    Output("coverage_per_class", "higher", "mean over classes of PRDC coverage within each class",
           select=False, column=("per class", "coverage")),
    args=("real", "fake", "labels", "real_labels"), min_samples=2, position=65, device_rows=True,
)
def prdc_per_class(real: Any, fake: Any, labels: Any, real_labels: Any, *, nearest_k: int = 5,
                   max_samples: int = 10000, device: Any = None) -> dict[str, Any]:
    """Precision, recall, density and coverage within each class, averaged over classes.

    :func:`evalkit.metrics.prdc.prdc` (Naeem et al., ICML 2020; equal to the ``prdc`` package)
    on each class's generated and reference features, every class weighing the same. A class
    needs more than ``nearest_k`` samples in both sets (the k-th neighbour of a sample, itself
    excluded, must exist); the others are listed in ``_skipped`` (the per-class CSV says why).
    At exactly ``nearest_k + 1`` samples each radius is the sample's largest distance to the
    other k, the package's definition (the (k+1)-th smallest distance, self included) taken
    as it reads; the ``prdc`` package itself raises there (``np.argpartition`` with
    ``kth = k + 1`` on k + 1 columns is out of bounds), so it cannot be compared at that size.
    Each class's four values are in ``_per_class``. A class larger than ``max_samples`` is
    subsampled with seed 0 (prdc's convention), so the values take no run seed.

    Args:
        real, fake: reference and generated features.
        labels, real_labels: class label of each generated / reference row.
        nearest_k: k of the k-NN radii.
        max_samples: most samples per class and set.
        device: torch device.
    """
    n = check_points("precision_per_class", "generated", fake, 2)
    m = check_points("precision_per_class", "reference", real, 2, dim=np.shape(fake)[1])
    lab_f, lab_r = _as_numpy(labels), _as_numpy(real_labels)
    if lab_f.shape != (n,) or lab_r.shape != (m,):
        raise MetricInputError(f"precision_per_class: {lab_f.shape[0]} labels for {n} generated and "
                               f"{lab_r.shape[0]} for {m} reference samples")
    rows_f, rows_r = dict(_by_label(lab_f)), dict(_by_label(lab_r))
    per: dict[str, dict[str, float]] = {}
    skipped = []
    for c in np.union1d(lab_f, lab_r):
        key = str(c.item() if hasattr(c, "item") else c)
        idx_f, idx_r = rows_f.get(c), rows_r.get(c)
        if idx_f is None or idx_r is None or min(len(idx_f), len(idx_r)) <= nearest_k:
            skipped.append(key)
            continue
        # rows taken where they are (a reference held on the device stays there)
        per[key] = prdc(take_rows(real, idx_r), take_rows(fake, idx_f), nearest_k=nearest_k,
                        max_samples=max_samples, seed=0, device=device)
    if not per:  # reported as not computed, with every class listed as skipped
        return {**dict.fromkeys(("precision_per_class", "recall_per_class", "density_per_class",
                                 "coverage_per_class")), "_per_class": {}, "_skipped": skipped}
    out: dict[str, Any] = {f"{k}_per_class": float(np.mean([v[k] for v in per.values()]))
                           for k in ("precision", "recall", "density", "coverage")}
    out.update(_per_class=per, _skipped=skipped)
    return out
