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

from evalkit.integrations.lightning import EvalkitCallback  # noqa: E402

OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(".")


class StepGAN(pl.LightningModule):
    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.net = torch.nn.Conv2d(4, 3, 3, padding=1)
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def sample(self, batch_size, *, seed, labels=None):
        if not self.training:  # evalkit's calls: which rank sampled which batch
            with open(OUT / f"calls-{self.global_rank}.txt", "a") as fh:
                fh.write(f"{self.global_step} {seed}\n")
        z = torch.randn(batch_size, 4, 12, 12, generator=torch.Generator().manual_seed(seed))
        return torch.sigmoid(self.net(z.to(self.device)))

    def training_step(self, batch, batch_idx):
        return ((self.sample(4, seed=self.global_step) - 0.7) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(32, 1), batch_size=2)


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
