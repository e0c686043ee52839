"""AdamW groups and the warm-up + cosine schedule against the formula written here."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnkit.training import TrainConfig, build_optimizer


def expected_lr(t: int, *, lr: float, warmup: int, total: int, floor: float) -> float:
    """Learning rate of update t (1-based): linear warm-up, cosine to lr * floor, then flat."""
    if t <= warmup:
        return lr * t / warmup
    if t >= total:
        return lr * floor
    cos = math.cos(math.pi * (t - warmup) / (total - warmup))
    return lr * (floor + (1 - floor) * (1 + cos) / 2)


@pytest.mark.parametrize(("warmup", "total", "floor"), [(4, 20, 0.1), (0, 10, 0.0), (3, 4, 0.5)])
def test_learning_rate_of_each_update(warmup: int, total: int, floor: float) -> None:
    model = nn.Linear(3, 2)
    config = TrainConfig(lr=0.02, warmup_steps=warmup, min_lr_ratio=floor, max_steps=total)
    optimizer, scheduler = build_optimizer(model, config, total)
    for t in range(1, total + 6):
        for group in optimizer.param_groups:
            want = expected_lr(t, lr=0.02, warmup=warmup, total=total, floor=floor)
            assert group["lr"] == pytest.approx(want, rel=1e-12, abs=1e-15), t
        model(torch.randn(2, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    if warmup:
        assert expected_lr(warmup, lr=1, warmup=warmup, total=total, floor=floor) == 1.0


def test_weight_decay_only_on_matrices() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    optimizer, _ = build_optimizer(model, TrainConfig(weight_decay=0.3, epochs=1), 10)
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.3 for p in g["params"]}
    assert decay == {id(model[0].weight), id(model[2].weight)}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    assert all(isinstance(g, dict) and g["betas"] == (0.9, 0.999) for g in optimizer.param_groups)


def test_schedule_must_outlast_warmup() -> None:
    with pytest.raises(ValueError, match="decay_steps=5 must exceed warmup_steps=5"):
        build_optimizer(nn.Linear(2, 2), TrainConfig(warmup_steps=5, epochs=1), 5)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"lr": 0.0}, ValueError, "TrainConfig.lr"),
        ({"lr": float("nan")}, ValueError, "TrainConfig.lr"),
        ({"lr": "1e-3"}, TypeError, "TrainConfig.lr must be a number"),
        ({"betas": (0.9, 1.0)}, ValueError, r"TrainConfig.betas\[1\]"),
        ({"warmup_steps": 2.5}, TypeError, "TrainConfig.warmup_steps must be an int"),
        ({"warmup_steps": 10, "decay_steps": 10}, ValueError, "decay_steps"),
        ({"min_lr_ratio": 1.5}, ValueError, "min_lr_ratio"),
        ({"max_grad_norm": -1.0}, ValueError, "max_grad_norm"),
        ({"epochs": 0}, ValueError, "TrainConfig.epochs must be >= 1, got 0"),
        ({"epochs": True}, TypeError, "TrainConfig.epochs"),
        ({"epochs": None}, ValueError, "needs a budget"),
        ({"minutes": -1.0}, ValueError, "TrainConfig.minutes"),
        ({"eval_every": 0}, ValueError, "eval_every"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        TrainConfig(**{"epochs": 1, **kwargs})
