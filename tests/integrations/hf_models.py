"""A tiny BERT built from a config (nothing downloaded) and a synthetic data set, for the integration tests."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

SAMPLES = 16


class Pairs(torch.utils.data.Dataset):
    """Sequences of 8 token ids; the label says whether the first token is even."""

    def __init__(self, n: int = SAMPLES, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 50, (n, 8), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": (self.ids[i, 0] % 2).long()}


def tiny_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


class Exploding(BertForSequenceClassification):
    """Raises in the forward pass of the given training step."""

    fail_at = 3
    calls = 0

    def forward(self, input_ids=None, attention_mask=None, labels=None):
        type(self).calls += 1
        if self.training and type(self).calls > self.fail_at:
            raise ValueError(f"boom after {self.fail_at} steps")
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def arguments(output_dir, **options) -> TrainingArguments:
    settings = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 4,
        "num_train_epochs": 2,  # 4 batches an epoch: 8 steps
        "learning_rate": 1e-3,
        "logging_steps": 2,
        "save_steps": 4,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
        **options,
    }
    return TrainingArguments(**settings)


def trainer(callback, output_dir, model=None, **options) -> Trainer:
    return Trainer(
        model=model if model is not None else tiny_model(),
        args=arguments(output_dir, **options),
        train_dataset=Pairs(),
        eval_dataset=Pairs(8, seed=1),
        callbacks=[callback],
    )
