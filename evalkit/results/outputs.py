"""What `score` writes besides the record: the console table, the per-sample and the per-class CSV."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.features.featureset import FeatureSet
from evalkit.files.fileio import atomic_write_text
from evalkit.formatting import format_number
from evalkit.metrics import per_sample, result_descriptions, result_directions
from evalkit.metrics.clip_score import clip_scores
from evalkit.metrics.prdc import REALISM_K
from evalkit.metrics.rarity import rarity_scores
from evalkit.results.directions import ARROWS

PER_SAMPLE_COLUMNS = ("index", "path", "realism", "nn_index", "nn_distance", "nn_path", "authentic")
# rarity (Han et al. 2023; empty for a sample in no real ball) after the columns above, then,
# when the generated set has prompts, the prompt (and clip_score when they have text embeddings)
RARITY_COLUMN = "rarity"
CONDITION_COLUMNS = ("prompt", "clip_score")


def metrics_table(records: list[dict[str, Any]]) -> str:
    """A plain-text table: one row per metric key, one column per scored set."""
    keys: list[str] = []
    for rec in records:
        for k in rec["metrics"]:
            if k not in keys and not k.endswith("_std"):
                keys.append(k)
    header = ["metric"] + [rec["name"] for rec in records]
    rows = []
    directions, descriptions = result_directions(), result_descriptions()
    for k in keys:
        row = [f"{k} {ARROWS.get(directions.get(k, 'none'), '')}".rstrip()]
        for rec in records:
            v = rec["metrics"].get(k)
            cell = format_number(v)
            std = rec["metrics"].get(f"{k}_std")
            if std is not None:  # a spread over the metric's own subsets/splits, not an error bar
                over = descriptions.get(f"{k}_std", "").rpartition(" over the ")[2] or "parts"
                cell += f" (sd over {over} {format_number(std, 2)})"
            ci = (rec.get("metrics_ci") or {}).get(k)
            if ci:
                cell += f" [{format_number(ci[0])}, {format_number(ci[1])}]"
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    skipped: dict[str, str] = {}
    for rec in records:
        skipped.update(rec.get("skipped") or {})
    no_ci: dict[str, str] = {}
    for rec in records:
        no_ci.update(rec.get("metrics_ci_missing") or {})
    if skipped or no_ci:
        out.append("")
    if skipped:
        out.append("skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    if no_ci:
        out.append("no interval: " + "; ".join(f"{k} ({v})" for k, v in no_ci.items()))
    return "\n".join(out)


def write_per_sample_csv(path: str | os.PathLike, fake: FeatureSet, real: FeatureSet, *,
                         seed: int, device: str, nearest_k: int = REALISM_K,
                         rarity_seed: int = 0) -> None:
    """Per generated sample: realism, nearest reference (index, distance, path), authenticity,
    rarity; with prompts also the prompt and its clip_score."""
    arrays = per_sample(real.arrays["features"], fake.arrays["features"], seed=seed, device=device,
                        nearest_k=nearest_k)
    nn_index = np.asarray(arrays["nn_index"]).astype(np.int64)
    rarity = rarity_scores(real.arrays["features"], fake.arrays["features"], seed=rarity_seed,
                           device=device)
    extra: list[list[str]] = [["" if np.isnan(v) else repr(float(v)) for v in rarity]]
    if fake.prompts is not None:
        extra.append(list(fake.prompts))
        if fake.get("text") is not None and fake.get("embedding") is not None:
            extra.append([repr(float(v)) for v in clip_scores(fake.arrays["embedding"],
                                                               fake.arrays["text"])])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PER_SAMPLE_COLUMNS + (RARITY_COLUMN,) + CONDITION_COLUMNS[:len(extra) - 1])
    for i in range(fake.n):
        j = int(nn_index[i])
        writer.writerow([
            i,
            fake.files[i] if fake.files else "",
            repr(float(arrays["realism"][i])),
            j,
            repr(float(arrays["nn_distance"][i])),
            real.files[j] if real.files else "",
            int(bool(arrays["authentic"][i])),
            *(col[i] for col in extra),
        ])
    atomic_write_text(path, buf.getvalue())


PER_CLASS_COLUMNS = ("class", "n_samples", "n_reference", "fd", "precision", "recall", "density",
                     "coverage", "rank_deficient", "skipped")
PER_CLASS_METRICS = ("fd_per_class", "precision_per_class")


def per_class_rows(fake: FeatureSet, real: FeatureSet, details: dict[str, Any], *,
                   nearest_k: int) -> list[dict[str, Any]]:
    """One row per class of either set: its sample counts, the per-class values that
    ``fd_per_class`` and ``precision_per_class`` computed (None where a class was left out or
    the metric did not run), whether its FD is a small-sample (rank-deficient) one, and why a
    value is missing (``nearest_k``: the PRDC k the classes were checked against)."""
    fd = details.get("fd_per_class") or {}
    pr = details.get("precision_per_class") or {}
    def count(labels):
        if labels is None:
            return {}
        keys, counts = np.unique(np.asarray(labels), return_counts=True)
        return {str(k.item() if hasattr(k, "item") else k): int(c) for k, c in zip(keys, counts)}

    n_f, n_r = count(fake.labels), count(real.labels if real.has_samples else None)
    classes = sorted(set(n_f) | set(n_r), key=lambda c: (0, int(c), "") if c.lstrip("-").isdigit()
                     else (1, 0, c))
    fd_skip, pr_skip = set(fd.get("_skipped") or ()), set(pr.get("_skipped") or ())
    deficient = set(fd.get("_rank_deficient") or ())
    rows = []
    for c in classes:
        why = []
        if not fd:
            why.append("fd_per_class did not run")
        elif c in fd_skip:
            why.append("fd: fewer than 2 samples in a set")
        if not pr:
            why.append("precision_per_class did not run")
        elif c in pr_skip:
            why.append(f"prdc: at most k = {nearest_k} samples in a set")
        prdc = (pr.get("_per_class") or {}).get(c) or {}
        rows.append({"class": c, "n_samples": n_f.get(c, 0), "n_reference": n_r.get(c, 0),
                     "fd": (fd.get("_per_class") or {}).get(c),
                     **{k: prdc.get(k) for k in ("precision", "recall", "density", "coverage")},
                     "rank_deficient": None if not fd or c in fd_skip else int(c in deficient),
                     "skipped": "; ".join(why)})
    return rows


def write_per_class_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """The per-class CSV (:data:`PER_CLASS_COLUMNS`; numbers at full precision, empty where
    missing), written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PER_CLASS_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[k] is None else repr(float(row[k])) if isinstance(row[k], float)
                         else row[k] for k in PER_CLASS_COLUMNS])
    atomic_write_text(path, buf.getvalue())


def per_sample_path(base: str, name: str, several: bool) -> Path:
    """``base`` for one set; ``base-stem.name.csv`` for each of several sets."""
    p = Path(base)
    return p.with_name(f"{p.stem}.{name}{p.suffix or '.csv'}") if several else p

