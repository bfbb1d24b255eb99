"""Train a tiny BERT with the Hugging Face Trainer on the CPU and log it to unitrack (runs in under a minute).

The model is built from a config and the data are made here: nothing is downloaded (``HF_HUB_OFFLINE=1``). The
task: say whether a sequence of token ids holds more even than odd ids. The run is a trial in ``$UNITRACK_URI``
(else ``hdf5://runs``) with the TrainingArguments and the model config as parameters, the ``loss``,
``eval_loss`` and ``eval_accuracy`` series at the global step, the checkpoint folders and the final status::

    python examples/hf_example.py
    unitrack view runs
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402

from unitrack.integrations.transformers import UnitrackCallback  # noqa: E402


class EvenOdd(torch.utils.data.Dataset):
    """Sequences of 12 token ids; label 1 when most of them are even."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 64, (n, 12), generator=g)
        self.labels = ((self.ids % 2 == 0).sum(dim=1) > 6).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=1) == prediction.label_ids).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description="Hugging Face Trainer + unitrack on the CPU")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--output-dir", default="hf_runs/even-odd")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16, num_labels=2,
    )  # fmt: skip
    arguments = TrainingArguments(
        output_dir=args.output_dir, num_train_epochs=args.epochs, per_device_train_batch_size=32,
        learning_rate=3e-3, logging_steps=8, eval_strategy="epoch", save_strategy="epoch", report_to="none",
        use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    callback = UnitrackCallback(name="even-odd", group="examples", system_metrics=1.0)
    trainer = Trainer(
        model=BertForSequenceClassification(config), args=arguments, train_dataset=EvenOdd(384, 0),
        eval_dataset=EvenOdd(128, 1), compute_metrics=accuracy, callbacks=[callback],
    )  # fmt: skip
    trainer.train()
    trial = callback.run.trial_logger.refresh()
    print(trial)
    print(
        f"eval_accuracy={trial.metrics['eval_accuracy'].latest:.3f} checkpoint={trial.metadata['checkpoints']['latest']}"
    )


if __name__ == "__main__":
    main()
