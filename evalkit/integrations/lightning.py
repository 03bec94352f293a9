"""A PyTorch Lightning callback that scores the model's samples every N steps or epochs.

``EvalkitCallback(ref=..., sample="sample", every_n_steps=1000, num_samples=10_000)`` calls
``pl_module.sample(batch_size, seed=..., labels=...)`` (the method it names; in eval mode,
without gradients), scores the images with a :class:`~evalkit.integrations.training.TrainingEvaluator`
(reference and encoder loaded once, on the module's device), logs the metrics with every
logger of the trainer (``evalkit/fd``, ... at ``trainer.global_step``) and, with ``out_dir``,
writes a record per evaluation (``step-00001000.json``, with ``step``) for `evalkit track`.
Under DDP every rank samples its share and rank 0 scores.
"""
from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch

from evalkit.integrations.loggers import PREFIX, scalars
from evalkit.integrations.training import TrainingEvaluator


class EvalkitCallback(pl.Callback):
    """Score ``pl_module.<sample>`` every ``every_n_steps`` optimizer steps or
    ``every_n_epochs`` epochs; keyword arguments go to :class:`TrainingEvaluator`
    (``encoder``, ``metrics``, ``num_samples``, ``seed``, ``labels``, ``batch_size``, ...).

    ``records`` holds every evaluation's record (on every rank)."""

    def __init__(self, ref: Any, *, sample: str = "sample", every_n_steps: int | None = None,
                 every_n_epochs: int | None = None, out_dir: str | os.PathLike | None = None,
                 prefix: str = PREFIX, **evaluator: Any):
        if (every_n_steps is None) == (every_n_epochs is None):
            raise ValueError("EvalkitCallback: give every_n_steps or every_n_epochs")
        self.ref, self.sample = ref, sample
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.out_dir, self.prefix = out_dir, prefix
        self.kwargs = evaluator
        self.evaluator: TrainingEvaluator | None = None
        self.records: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and \
                (not self.records or self.records[-1]["step"] != step):
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.evaluate(trainer, pl_module)

    def evaluate(self, trainer, pl_module) -> dict[str, Any]:
        """Score the module's samples now; log and return the record."""
        if self.evaluator is None:  # built once, on the module's device
            self.kwargs.setdefault("device", str(pl_module.device))
            self.evaluator = TrainingEvaluator(self.ref, out_dir=self.out_dir, **self.kwargs)
        fn = getattr(pl_module, self.sample)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                record = self.evaluator.evaluate(fn, step=trainer.global_step)
        finally:
            pl_module.train(was_training)
        self.records.append(record)
        if trainer.is_global_zero:
            values = scalars(record, self.prefix)
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
        return record
