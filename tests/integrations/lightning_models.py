"""A tiny Lightning model and data for the integration tests (CPU, a second or two per fit)."""

from __future__ import annotations

import argparse
import warnings

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

#: Lightning's advice about data-loader workers and log intervals is noise for a 4-batch data set.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*number of training batches.*")
warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")

BATCHES = 4  # per epoch


def loader(seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8 * BATCHES, 4, generator=g)
    y = x.sum(dim=1, keepdim=True)
    return DataLoader(TensorDataset(x, y), batch_size=8)


class Tiny(pl.LightningModule):
    """A linear regression; ``fail_at`` raises in that training step."""

    def __init__(self, lr: float = 0.05, fail_at: int = -1, images: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "lr": lr,
                "fail_at": fail_at,
                "optimizer": {"name": "sgd", "momentum": 0.9},
                "data": argparse.Namespace(batch_size=8, shuffle=False),
            }
        )
        self.layer = torch.nn.Linear(4, 1)
        self.images = images

    def training_step(self, batch, batch_idx):
        if self.global_step == self.hparams.fail_at:
            raise ValueError(f"boom at step {self.global_step}")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def on_train_epoch_end(self):
        if self.images:  # non-scalars go to the logger directly (self.log takes scalars only)
            self.logger.log_metrics(
                {"weights": self.layer.weight.detach().clone(), "note": f"epoch {self.current_epoch}"},
                step=self.global_step,
            )

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def trainer(logger, root, **options) -> pl.Trainer:
    settings = {
        "max_epochs": 2,
        "accelerator": "cpu",
        "devices": 1,
        "log_every_n_steps": 2,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(root),
        "logger": logger,
        **options,
    }
    return pl.Trainer(**settings)
