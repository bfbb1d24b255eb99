"""Train a small classifier with Lightning on the CPU and log it to unitrack (runs in a few seconds).

The data are made here (two interleaved spirals), nothing is downloaded. Every run is a trial in
``$UNITRACK_URI`` (else ``hdf5://runs``): hyperparameters, ``train_loss``/``val_loss``/``val_acc`` series, the
checkpoint paths, system metrics every second, and the final status::

    python examples/lightning_example.py --epochs 3
    unitrack view runs
"""

from __future__ import annotations

import argparse
import math
import warnings

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from unitrack.lightning import UnitrackLogger

warnings.filterwarnings("ignore", ".*does not have many workers.*")  # a toy data set needs none


def spirals(n: int, seed: int) -> TensorDataset:
    """Two interleaved spirals with a little noise: ``n`` points, labels 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * 3 * math.pi
    label = torch.randint(0, 2, (n,), generator=g)
    sign = 1 - 2 * label.float()
    x = torch.stack([sign * t * torch.cos(t), sign * t * torch.sin(t)], dim=1) / 10
    return TensorDataset(x + 0.05 * torch.randn(n, 2, generator=g), label)


class Classifier(pl.LightningModule):
    """A two-layer perceptron."""

    def __init__(self, hidden: int = 32, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
            torch.nn.Linear(hidden, 2),
        )  # fmt: skip

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description="Lightning + unitrack on the CPU")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--name", default="spirals")
    args = parser.parse_args()
    torch.manual_seed(0)
    train = DataLoader(spirals(2048, seed=0), batch_size=64, shuffle=True)
    val = DataLoader(spirals(512, seed=1), batch_size=256)
    logger = UnitrackLogger(name=args.name, group="examples", system_metrics=1.0)
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="cpu", devices=1, logger=logger, log_every_n_steps=8,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir="lightning_runs",
    )  # fmt: skip
    trainer.fit(Classifier(args.hidden, args.lr), train, val)
    trial = logger.run.trial_logger.refresh()
    print(trial)
    print(
        f"val_acc={trial.metrics['val_acc'].latest:.3f} checkpoint={trial.metadata['checkpoints']['latest']}"
    )


if __name__ == "__main__":
    main()
