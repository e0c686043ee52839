"""``TrainConfig``: every knob of the one Trainer, checked when it is built.

Budgets (``epochs``, ``max_steps``, ``minutes``) say when to stop; at least one is needed and
training stops at the first one spent. They may change between a run and its resume. The
optimisation fields (``lr``, ``betas``, the schedule, ``seed``, ...) may not: a resume with
different values is refused, naming them (see :data:`RESUME_FIELDS`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# Fields that must agree between a checkpoint and the config resuming from it.
RESUME_FIELDS = (
    "lr",
    "weight_decay",
    "betas",
    "eps",
    "warmup_steps",
    "min_lr_ratio",
    "max_grad_norm",
    "seed",
)


def _check_int(name: str, value: Any, *, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"TrainConfig.{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"TrainConfig.{name} must be >= {minimum}, got {value}")


def _check_float(
    name: str, value: Any, *, low: float, high: float = math.inf, open_low: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"TrainConfig.{name} must be a number, got {type(value).__name__} {value!r}"
        )
    bad_low = value <= low if open_low else value < low
    if not math.isfinite(value) or bad_low or value >= high:
        bracket = "(" if open_low else "["
        raise ValueError(
            f"TrainConfig.{name} must be finite and in {bracket}{low}, {high}), got {value}"
        )


@dataclass(frozen=True)
class TrainConfig:
    """How to train: AdamW, linear warm-up then cosine decay to a floor, clipping, budgets.

    Attributes:
        lr: peak learning rate (reached at the end of the warm-up).
        weight_decay: AdamW decoupled weight decay, applied to parameters with 2+ dimensions
            only (biases and norm scales are not decayed).
        betas, eps: AdamW moments.
        warmup_steps: updates ``1..warmup_steps`` use ``lr * t / warmup_steps``.
        decay_steps: length of the whole schedule in updates (warm-up included), whatever the
            budgets; after it the learning rate stays at ``lr * min_lr_ratio``. ``None``: the
            budgets decide: ``epochs`` x batches per epoch (when the task's batches have a
            ``len()``) or ``max_steps``, and ``minutes``, whichever ends first (``schedule.py``).
        min_lr_ratio: the floor of the cosine, as a fraction of ``lr``.
        max_grad_norm: clip the global gradient norm to this; ``None`` disables clipping.
        epochs: passes over ``train_batches``; ``None`` for no epoch limit.
        max_steps: stop after this many updates in total (counting resumed ones).
        minutes: stop when the run has trained this much wall time, counting the time
            before a resume (as ``max_steps`` counts resumed updates).
        eval_every: evaluate (and checkpoint) every this many updates; evaluation also runs at
            the end of each epoch and when training stops. ``None``: only those.
        log_every: one progress line / history entry every this many updates.
        seed: seeds the global RNGs at the start and the data order of each epoch.

    Raises:
        TypeError, ValueError: a field of the wrong type or out of range (named in the message).
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    decay_steps: int | None = None
    min_lr_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    epochs: int | None = None
    max_steps: int | None = None
    minutes: float | None = None
    eval_every: int | None = None
    log_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        _check_float("lr", self.lr, low=0.0, open_low=True)
        _check_float("weight_decay", self.weight_decay, low=0.0)
        if not isinstance(self.betas, tuple | list) or len(self.betas) != 2:
            raise TypeError(f"TrainConfig.betas must be a pair of floats, got {self.betas!r}")
        object.__setattr__(self, "betas", (float(self.betas[0]), float(self.betas[1])))
        for i, beta in enumerate(self.betas):
            _check_float(f"betas[{i}]", beta, low=0.0, high=1.0)
        _check_float("eps", self.eps, low=0.0, open_low=True)
        _check_int("warmup_steps", self.warmup_steps, minimum=0)
        _check_int("decay_steps", self.decay_steps, minimum=1, optional=True)
        if self.decay_steps is not None and self.decay_steps <= self.warmup_steps:
            raise ValueError(
                f"TrainConfig.decay_steps ({self.decay_steps}) must exceed warmup_steps "
                f"({self.warmup_steps})"
            )
        _check_float("min_lr_ratio", self.min_lr_ratio, low=0.0, high=math.inf)
        if self.min_lr_ratio > 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_grad_norm is not None:
            _check_float("max_grad_norm", self.max_grad_norm, low=0.0, open_low=True)
        _check_int("epochs", self.epochs, minimum=1, optional=True)
        _check_int("max_steps", self.max_steps, minimum=1, optional=True)
        if self.minutes is not None:
            _check_float("minutes", self.minutes, low=0.0, open_low=True)
        if self.epochs is None and self.max_steps is None and self.minutes is None:
            raise ValueError(
                "TrainConfig needs a budget: set epochs, max_steps or minutes (all are None)"
            )
        _check_int("eval_every", self.eval_every, minimum=1, optional=True)
        _check_int("log_every", self.log_every, minimum=1)
        _check_int("seed", self.seed, minimum=0)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-able values (``betas`` as a list)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out
