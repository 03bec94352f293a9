"""Evaluation inside a training run: a generator scored every few steps, metrics logged.

* :class:`~evalkit.integrations.training.TrainingEvaluator`: reference and encoder loaded
  once, then ``evaluate(generator, step)`` samples, encodes and scores (on every rank under
  torch.distributed), returning the result record with ``step``;
* :mod:`evalkit.integrations.loggers`: TensorBoard, Weights & Biases and MLflow, each
  imported only when used (the ``tensorboard``, ``wandb`` and ``mlflow`` extras);
* :mod:`evalkit.integrations.lightning`: :class:`EvalkitCallback` for PyTorch Lightning
  (the ``lightning`` extra).

Nothing here is imported by ``import evalkit``.
"""
from __future__ import annotations

from evalkit.integrations.training import TrainingEvaluator

__all__ = ["TrainingEvaluator"]
