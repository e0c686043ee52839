"""AdamW and its learning-rate schedule: linear warm-up, then cosine decay to a floor.

Update ``t`` (1, 2, ...) uses ``lr * f(t)`` with, for warm-up ``W``, schedule length ``T`` and
floor ``m``::

    f(t) = t / W                                        for t <= W
    f(t) = m + (1 - m) * (1 + cos(pi * (t - W) / (T - W))) / 2   for W < t <= T
    f(t) = m                                            for t > T
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from attnkit.training.config import TrainConfig


@dataclass
class WarmupCosine:
    """The factor ``f`` above as a callable for ``LambdaLR`` (which passes ``t - 1``).

    Its fields are plain numbers so ``LambdaLR.state_dict()`` saves them as JSON.
    """

    warmup_steps: int
    decay_steps: int
    min_lr_ratio: float

    def factor(self, t: int) -> float:
        """The multiplier of the peak learning rate for update ``t`` (1-based)."""
        if t <= self.warmup_steps:
            return t / self.warmup_steps
        if t > self.decay_steps:
            return self.min_lr_ratio
        progress = (t - self.warmup_steps) / (self.decay_steps - self.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine

    def __call__(self, last_epoch: int) -> float:
        return self.factor(last_epoch + 1)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weights with 2+ dimensions decayed, biases and norm scales not."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    if not decay and not no_decay:
        raise ValueError(f"model {type(model).__name__} has no trainable parameters")
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(
    model: nn.Module, config: TrainConfig, decay_steps: int
) -> tuple[torch.optim.AdamW, LambdaLR]:
    """AdamW over ``model``'s trainable parameters and its warm-up + cosine ``LambdaLR``.

    Raises:
        ValueError: the model has no trainable parameters, or ``decay_steps`` does not exceed
            ``config.warmup_steps``.
    """
    if decay_steps <= config.warmup_steps:
        raise ValueError(
            f"the schedule length decay_steps={decay_steps} must exceed "
            f"warmup_steps={config.warmup_steps}"
        )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.weight_decay),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
    )
    schedule = WarmupCosine(config.warmup_steps, decay_steps, config.min_lr_ratio)
    return optimizer, LambdaLR(optimizer, schedule)
