"""Tiny models and tasks for the Trainer tests (CPU, deterministic, milliseconds per step)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnkit.training import CheckpointExtras, StepLoss, sequence_cross_entropy


@dataclass
class MLPConfig:
    inputs: int = 4
    hidden: int = 16
    outputs: int = 2
    dropout: float = 0.2


class MLP(nn.Module):
    """Two layers with dropout (so an exact resume needs the RNG state too)."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.inputs, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RegressionTask:
    """y = tanh(x W) on random data; metric: validation MSE (lower is better)."""

    metric = "mse"
    higher_is_better = False

    def __init__(self, n: int = 48, batch: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        weight = torch.randn(4, 2, generator=g)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.tanh(self.x @ weight)
        self.val_x = torch.randn(32, 4, generator=g)
        self.val_y = torch.tanh(self.val_x @ weight)
        self.batch = batch
        self.steps_taken = 0

    def train_batches(self, epoch: int, generator: torch.Generator) -> list:
        order = torch.randperm(len(self.x), generator=generator)
        return [(self.x[idx], self.y[idx]) for idx in order.split(self.batch)]

    def loss(self, model: nn.Module, batch: tuple) -> StepLoss:
        self.steps_taken += 1
        x, y = batch
        return StepLoss(F.mse_loss(model(x), y), tokens=len(x))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"mse": float(F.mse_loss(model(self.val_x), self.val_y))}

    def checkpoint_extras(self) -> CheckpointExtras:
        return CheckpointExtras(config={"n": len(self.x), "batch": self.batch})


@dataclass
class CopyConfig:
    vocab: int = 8
    dim: int = 16


class CopyModel(nn.Module):
    """Embedding -> linear, position by position: it must learn to copy each token."""

    def __init__(self, config: CopyConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.dim)
        self.out = nn.Linear(config.dim, config.vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.embed(tokens)))  # (B, T, V)


class CopyTask:
    """Copy random token sequences (ids 1..V-1, padded with 0); metric: token accuracy."""

    metric = "accuracy"
    higher_is_better = True
    pad_id = 0

    def __init__(self, vocab: int = 8, n: int = 64, length: int = 6, batch: int = 16,
                 tokenizer_json: str | None = None) -> None:
        g = torch.Generator().manual_seed(1)
        self.vocab = vocab
        self.train = self._make(g, n, length)
        self.valid = self._make(g, 32, length)
        self.batch = batch
        self.tokenizer_json = tokenizer_json

    def _make(self, g: torch.Generator, n: int, length: int) -> torch.Tensor:
        tokens = torch.randint(1, self.vocab, (n, length), generator=g)
        lengths = torch.randint(2, length + 1, (n, 1), generator=g)
        return tokens.masked_fill(torch.arange(length) >= lengths, self.pad_id)

    def train_batches(self, epoch: int, generator: torch.Generator) -> list:
        order = torch.randperm(len(self.train), generator=generator)
        return [self.train[idx] for idx in order.split(self.batch)]

    def loss(self, model: nn.Module, batch: torch.Tensor) -> StepLoss:
        loss, n = sequence_cross_entropy(model(batch), batch, pad_id=self.pad_id,
                                         label_smoothing=0.1)
        return StepLoss(loss, tokens=n)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        logits = model(self.valid)
        real = self.valid != self.pad_id
        correct = (logits.argmax(-1) == self.valid) & real
        loss, _ = sequence_cross_entropy(logits, self.valid, pad_id=self.pad_id)
        return {"accuracy": float(correct.sum() / real.sum()), "loss": float(loss)}

    def checkpoint_extras(self) -> CheckpointExtras:
        return CheckpointExtras(config={"vocab": self.vocab}, tokenizer_json=self.tokenizer_json)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
