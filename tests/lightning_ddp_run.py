"""A 2-process (or 1-process) Lightning run on CPU with the evalkit callback, for
tests/test_integrations.py: ``python lightning_ddp_run.py REF OUT DEVICES``.

Lightning's ``ddp`` strategy starts rank 1 by running this script again (gloo on CPU). The
loss depends on ``global_step`` only, not on the batch, so the model at each step is the
same whatever the number of processes (DDP averages equal gradients). Each rank writes the
records its callback returned to ``OUT/rank-R.json``; rank 0's callback also writes the
per-step records (``OUT/records``) and the CSV log.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import TINY  # noqa: E402  (registers the tiny test encoder)
from lightning_models import TinyGAN  # noqa: E402

from evalkit.integrations.lightning import EvalkitCallback  # noqa: E402

OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(".")


class StepGAN(TinyGAN):
    """TinyGAN whose loss depends on ``global_step`` only, logging which rank sampled what."""

    DATA = 32

    def sample(self, batch_size, *, seed, labels=None):
        if not self.training:  # evalkit's calls: which rank sampled which batch
            with open(OUT / f"calls-{self.global_rank}.txt", "a") as fh:
                fh.write(f"{self.global_step} {seed}\n")
        return super().sample(batch_size, seed=seed, labels=labels)

    def loss_seed(self, batch_idx: int) -> int:
        return self.global_step


def main() -> None:
    ref, out, devices = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    cb = EvalkitCallback(ref, every_n_steps=2, num_samples=16, metrics="fd,kd",
                         out_dir=out / "records", encoder=TINY, device="cpu", batch_size=4)
    trainer = pl.Trainer(max_steps=4, callbacks=[cb], logger=CSVLogger(out / "csv", name="run"),
                         accelerator="cpu", devices=devices,
                         strategy="ddp" if devices > 1 else "auto",
                         enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False)
    trainer.fit(StepGAN())
    (out / f"rank-{trainer.global_rank}.json").write_text(json.dumps(
        {"world": trainer.world_size, "records": cb.records}))


if __name__ == "__main__":
    main()
