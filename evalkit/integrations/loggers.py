"""Plain loggers for training loops without Lightning: each ``log(record, step, images=None)``
writes the record's metrics (as ``PREFIX + key``, finite numbers only) at ``step`` and, when
given, the sample grid. Each library is imported when its logger is created, never before:
TensorBoard (``torch.utils.tensorboard.SummaryWriter``), Weights & Biases (``wandb``, e.g.
``mode="offline"``), MLflow (``mlflow``, e.g. a ``file:`` tracking URI).
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from evalkit.errors import InputError, pip_hint
from evalkit.features.generate import image_grid

PREFIX = "evalkit/"


def scalars(record: dict[str, Any], prefix: str = PREFIX) -> dict[str, float]:
    """The record's metric values worth logging: finite numbers, keys prefixed."""
    out = {}
    for key, value in (record.get("metrics") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[prefix + key] = float(value)
    return out


def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"this logger needs {module}: {pip_hint(extra)}") from None


class TensorBoardLogger:
    """Scalars (``add_scalar``) and the sample grid (``add_image``) in a TensorBoard log dir."""

    def __init__(self, log_dir: str | os.PathLike, prefix: str = PREFIX):
        _need("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.prefix = prefix

    def log(self, record: dict[str, Any], step: int, images: np.ndarray | None = None) -> None:
        for key, value in scalars(record, self.prefix).items():
            self.writer.add_scalar(key, value, global_step=step)
        if images is not None and len(images):
            self.writer.add_image(self.prefix + "samples", image_grid(images),
                                  global_step=step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """``wandb.log`` of the scalars (and a ``wandb.Image`` grid) in a run it starts, or in
    ``run`` when given; ``init`` keywords go to ``wandb.init`` (``mode="offline"``, ``dir``)."""

    def __init__(self, run: Any = None, prefix: str = PREFIX, **init: Any):
        self.wandb = _need("wandb", "wandb")
        self.run = run if run is not None else self.wandb.init(**init)
        self.prefix = prefix

    def log(self, record: dict[str, Any], step: int, images: np.ndarray | None = None) -> None:
        data: dict[str, Any] = dict(scalars(record, self.prefix))
        if images is not None and len(images):
            data[self.prefix + "samples"] = self.wandb.Image(image_grid(images))
        self.run.log(data, step=int(step))

    def close(self) -> None:
        self.run.finish()


class MLflowLogger:
    """``mlflow.log_metric`` per scalar (MLflow keys allow ``/``) in the active run, or one
    it starts under ``experiment`` at ``tracking_uri`` (e.g. ``file:/path/mlruns``)."""

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None,
                 run_name: str | None = None, prefix: str = PREFIX):
        self.mlflow = _need("mlflow", "mlflow")
        if tracking_uri is not None:
            self.mlflow.set_tracking_uri(tracking_uri)
        if experiment is not None:
            self.mlflow.set_experiment(experiment)
        self.run = self.mlflow.active_run() or self.mlflow.start_run(run_name=run_name)
        self.prefix = prefix

    def log(self, record: dict[str, Any], step: int, images: np.ndarray | None = None) -> None:
        client, run_id = self.mlflow.tracking.MlflowClient(), self.run.info.run_id
        for key, value in scalars(record, self.prefix).items():
            client.log_metric(run_id, key, value, step=int(step))
        if images is not None and len(images):
            client.log_image(run_id, image_grid(images),
                             artifact_file=f"samples/step-{int(step):08d}.png")

    def close(self) -> None:
        self.mlflow.end_run()
