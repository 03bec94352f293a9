"""The tiny Lightning generator that the integration tests train on CPU (imported by
tests/test_integrations.py and tests/lightning_ddp_run.py; needs lightning installed)."""
from __future__ import annotations

import lightning.pytorch as pl
import torch


class TinyGAN(pl.LightningModule):
    """A seeded 3×3 convolution of noise trained a few steps on a toy loss; ``sample`` is what
    evalkit calls; ``DATA`` training rows in batches of 2."""

    DATA = 16

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.net = torch.nn.Conv2d(4, 3, 3, padding=1)
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def sample(self, batch_size, *, seed, labels=None):
        z = torch.randn(batch_size, 4, 12, 12, generator=torch.Generator().manual_seed(seed))
        return torch.sigmoid(self.net(z.to(self.device)))

    def loss_seed(self, batch_idx: int) -> int:
        return batch_idx

    def training_step(self, batch, batch_idx):
        return ((self.sample(4, seed=self.loss_seed(batch_idx)) - 0.7) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(self.DATA, 1), batch_size=2)
