"""Score a generator during training without writing images, reusing what does not change.

The reference features (or statistics) are read once and the encoder is built once and kept
on its device; each :meth:`TrainingEvaluator.evaluate` samples ``num_samples`` images
through :mod:`evalkit.features.generate` (the same seeds every time, so the curves compare
the model, not the noise, as EDM2's and ADM's periodic FID evaluations fix their seeds),
encodes them, and scores them as :func:`evalkit.score` with the same generator would.

When the generated set is large enough to be reduced to its moments (every metric runs from
mean and covariance alone, ``fd``/``sfid``, and ``num_samples > 2·D``:
:func:`evalkit.features.loader.stream_outputs`), the reference is reduced once too: its
float64 mean and covariance are computed (or read from its statistics file) once, held as
tensors on the evaluator's device and reused by every evaluation; its rows are dropped. Each
evaluation then keeps no generated rows either (running sums per shard), so its memory does
not grow with ``num_samples``. Otherwise the reference rows the metrics read are moved once to
the evaluator's device as tensors (:class:`evalkit.scoring.run.ResidentRows`, in their own
dtype) and handed to every evaluation's metrics that take device tensors (registry
``device_rows``: ``fd``, ``sfid``, ``fd_inf``, ``kd``, ``cmmd``, PRDC and per-class PRDC,
``realism``, ``rarity``, ``rke``, ``authpct``, ``ct``, ``fls``, ``sw_approx``); the others
(``fd_per_class``, TopP&R: numpy by design) get the host rows, as :func:`evalkit.score`
does. Nothing is kept from one evaluation to the next but the records' summary
(:attr:`TrainingEvaluator.history`), so memory stays flat over many evaluations.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evalkit.api import SourceLike, load_source
from evalkit.devices import resolve_device
from evalkit.encoders import build_encoder
from evalkit.features import distributed as dist
from evalkit.features.featureset import FeatureSet
from evalkit.features.generate import GeneratedSource
from evalkit.features.loader import load_generated, stream_outputs
from evalkit.features.options import ExtractOptions
from evalkit.metrics import get_metric, list_metrics
from evalkit.results.record import build_record, write_records
from evalkit.scoring.plan import moment_arrays, parse_metric_list
from evalkit.scoring.run import ResidentRows, resident_kinds
from evalkit.scoring.score import ScoreConfig, score_set


class TrainingEvaluator:
    """Evaluate a generator every so often: ``evaluate(fn, step)`` -> the result record.

    Args:
        ref: the reference (a source, a statistics ``.npz``, a registered name, a FeatureSet).
        encoder, arch, weights, precision, batch_size, device: as for :func:`evalkit.score`.
        metrics: metric keys (``"fd"``, ``"fd,kd,precision,recall"``) or ``"all"``.
        num_samples: images per evaluation.
        seed: the sampling seed (the same samples' noise at every evaluation) and the
            metrics' run seed.
        labels, num_classes: class labels for a class-conditional generator
            (``random`` | ``balanced``; :func:`evalkit.features.generate.draw_labels`).
        out_dir: write each record as ``OUT_DIR/step-00001000.json`` (rank 0).
        name: the records' ``name``.
        loggers: objects with ``log(record, step, images=None)`` (:mod:`.loggers`).
        log_images: how many samples go into the image grid given to the loggers.
        encoder_module: a built encoder to use instead of building ``encoder``.

    Under torch.distributed every rank must call :meth:`evaluate` together; each samples
    its shards and rank 0 scores them. Every rank gets the record (broadcast from rank 0).
    """

    def __init__(self, ref: SourceLike, *, encoder: str = "dinov2", arch: str | None = None,
                 weights: str | None = None, metrics: str | Sequence[str] = "fd",
                 num_samples: int = 10_000, seed: int = 0, labels: str | None = None,
                 num_classes: int | None = None, batch_size: int = 64, device: str = "auto",
                 precision: str = "fp32", out_dir: str | os.PathLike | None = None,
                 name: str = "train", loggers: Sequence[Any] = (), log_images: int = 0,
                 ref_dir: str | None = None, encoder_module: Any = None):
        self.options = ExtractOptions(encoder=encoder, arch=arch, weights=weights,
                                      batch_size=batch_size, device=device, workers=0,
                                      precision=precision, use_cache=False, quiet=True)
        dev = dist.setup(device) or resolve_device(device)
        self.device = dev
        module = encoder_module or build_encoder(encoder, arch, weights)
        self.encoder = module.to(dev).eval()
        metric_text = metrics if isinstance(metrics, str) else ",".join(metrics)
        self.config = ScoreConfig(metrics=parse_metric_list(metric_text), seed=seed,
                                  device=str(dev), progress=False)
        ref_options = ExtractOptions(encoder=encoder, arch=arch, weights=weights,
                                     batch_size=batch_size, device=device, precision=precision,
                                     workers=0, quiet=True)
        self.num_samples, self.seed = int(num_samples), int(seed)
        wanted = moment_arrays(self.config.metrics)
        self.streamed = wanted and stream_outputs(wanted, self.num_samples,
                                                  getattr(self.encoder, "outputs", None))
        real = load_source(ref, ref_options, role="reference", ref_dir=ref_dir)
        self.reference_loads = 1  # the reference is read here only
        # only rank 0 scores (the others hold a placeholder under torch.distributed)
        self.real = (reference_on_device(real, self.streamed, dev)
                     if self.streamed and dist.is_main() else real)
        # the rows the metrics that take device tensors read: moved once, reused every time
        self.resident = None
        if dist.is_main() and self.real.has_samples:
            kinds = resident_kinds([get_metric(n) for n in self.config.metrics or list_metrics()],
                                   self.real)
            self.resident = ResidentRows(self.real, kinds, dev) if kinds else None
        self.labels, self.num_classes = labels, num_classes
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.name = name
        self.loggers = list(loggers)
        self.log_images = int(log_images)
        self.history: list[dict[str, Any]] = []  # {"step", "metrics"} per evaluation

    def evaluate(self, generator: Callable[..., Any], step: int) -> dict[str, Any]:
        """Sample, encode and score ``generator`` at training step ``step``.

        Returns the result record (with ``step`` and ``generator``), on every rank.
        """
        src = GeneratedSource.make(generator, self.num_samples, seed=self.seed,
                                   batch_size=self.options.batch_size, labels=self.labels,
                                   num_classes=self.num_classes, keep_first=self.log_images)
        fake = load_generated(src, self.options, encoder=self.encoder, moments=self.streamed)
        record = None
        if dist.is_main():
            scores = score_set(fake, self.real, None, self.config, name=self.name,
                               ref_name=self.real.meta.get("reference_name"),
                               resident=self.resident)
            record = build_record(scores, generator=src.describe(), step=step)
            if self.out_dir is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                write_records([record], self.out_dir / f"step-{int(step):08d}.json")
            images = src.first(self.log_images) if self.log_images else None
            for logger in self.loggers:
                logger.log(record, step, images=images)
        del fake, src
        record = dist.broadcast(record)
        self.history.append({"step": int(step), "metrics": dict(record["metrics"])})
        return record


def reference_on_device(real: FeatureSet, arrays: Sequence[str], dev: Any) -> FeatureSet:
    """A statistics-only reference with the float64 (mean, covariance) of each of ``arrays``
    as tensors on ``dev``: its stored statistics moved once, or computed once from its rows
    as the Fréchet metrics compute them (:func:`evalkit.metrics.frechet.moments`)."""
    import torch

    from evalkit.errors import InputError
    from evalkit.metrics.frechet import moments

    held = {}
    for key in arrays:
        if key in real.moments:
            held[key] = tuple(torch.as_tensor(a, dtype=torch.float64, device=dev)
                              for a in real.moments[key])
        elif real.has_samples and real.get(key) is not None:
            held[key] = moments(real.get(key), dev, "fd" if key == "features" else key,
                                "reference")
        else:
            raise InputError(f"reference {real.source}: no '{key}' features or statistics")
    meta = dict(real.meta, stats_only=True, n=real.n)
    return FeatureSet({}, None, meta, real.source, None, held)

