"""AdamW and its learning-rate schedule: linear warm-up, then cosine decay to a floor.

Update ``t`` (1, 2, ...) uses ``lr * f(t)`` with, for warm-up ``W`` and floor ``m``::

    f(t) = t / W                                   for t <= W
    f(t) = m + (1 - m) * (1 + cos(pi * p)) / 2      after the warm-up, p = progress in [0, 1]

The progress ``p`` is the share of the budget spent since the warm-up ended. A step budget
(schedule length ``T`` updates) gives ``p = (t - W) / (T - W)``; a time budget of ``S``
seconds gives ``p = (s_t - s_W) / (S - s_W)`` with ``s_t`` the time at which update ``t`` ends (the
time so far, projected by the mean update) and ``s_W`` the time at the end of the warm-up, so
a run given only minutes decays as a run given only steps (exactly so when every update
takes as long). With both, ``p`` is the larger share: the schedule follows whichever budget will
end the run first. A ``TrainConfig.decay_steps`` given explicitly fixes ``T`` and time does not
move the schedule. After ``p = 1`` the rate stays at ``lr * m``.
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

    Its fields are plain numbers so ``LambdaLR.state_dict()`` saves them as JSON (a resumed
    run continues the same schedule). With a time budget the Trainer sets ``seconds`` (the
    training time so far) before each ``scheduler.step()``.

    Attributes:
        warmup_steps: ``W``.
        decay_steps: ``T``, the schedule length in updates; ``None``: time only.
        min_lr_ratio: ``m``.
        budget_seconds: ``S``, the time budget; ``None``: steps only.
        seconds: ``s``.
        warmup_end_seconds: ``s_W`` (set by the first update after the warm-up).
    """

    warmup_steps: int
    decay_steps: int | None
    min_lr_ratio: float
    budget_seconds: float | None = None
    seconds: float = 0.0
    warmup_end_seconds: float | None = None

    def progress(self, t: int) -> float:
        """``p`` for update ``t`` > ``W`` (see the module docstring), in ``[0, 1]``."""
        shares = []
        if self.decay_steps is not None:
            shares.append((t - self.warmup_steps) / (self.decay_steps - self.warmup_steps))
        if self.budget_seconds is not None:
            if self.warmup_end_seconds is None:  # the first update after the warm-up
                self.warmup_end_seconds = self.seconds
            # ``seconds`` is the time after t - 1 updates: update t ends at about t/(t - 1)
            # of it, as update t of a step budget ends at t (the same curve when every
            # update takes as long).
            end = self.seconds * t / (t - 1) if t > 1 else self.seconds
            left = self.budget_seconds - self.warmup_end_seconds
            spent = end - self.warmup_end_seconds
            shares.append(spent / left if left > 0 else 1.0)
        return min(1.0, max(0.0, *shares))

    def factor(self, t: int) -> float:
        """The multiplier of the peak learning rate for update ``t`` (1-based)."""
        if t <= self.warmup_steps:
            return t / self.warmup_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * self.progress(t)))
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


def time_budget(config: TrainConfig) -> float | None:
    """The seconds the schedule follows: the time budget, unless ``config.decay_steps`` fixes
    the schedule's length in updates (then time does not move it)."""
    if config.minutes is None or config.decay_steps is not None:
        return None
    return config.minutes * 60.0


def build_optimizer(
    model: nn.Module, config: TrainConfig, decay_steps: int | None
) -> tuple[torch.optim.AdamW, LambdaLR]:
    """AdamW over ``model``'s trainable parameters and its warm-up + cosine ``LambdaLR``: over
    ``decay_steps`` updates, over the time budget (:func:`time_budget`), or over whichever
    ends first.

    Raises:
        ValueError: the model has no trainable parameters, ``decay_steps`` does not exceed
            ``config.warmup_steps``, or neither ``decay_steps`` nor ``config.minutes`` is set.
    """
    if decay_steps is None and config.minutes is None:
        raise ValueError("the schedule needs a length: decay_steps or config.minutes")
    if decay_steps is not None and decay_steps <= config.warmup_steps:
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
    schedule = WarmupCosine(
        config.warmup_steps, decay_steps, config.min_lr_ratio, time_budget(config)
    )
    return optimizer, LambdaLR(optimizer, schedule)
