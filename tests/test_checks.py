"""The opt-in NaN/Inf checks, and the Trainer naming where a diverged step went wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnkit
from attnkit.checks import locate, watch
from attnkit.training import StepLoss, TrainConfig, Trainer, TrainingDiverged


def test_attention_checks_name_the_tensor_when_on() -> None:
    q, k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    v[0, 0, 2, 1] = float("nan")
    attnkit.attention(q, k, v)  # off by default: no check, no error (and remembered)
    attnkit.set_checks(True)
    try:
        for _ in range(2):  # every call checks: none runs from the memory of small calls
            with pytest.raises(
                attnkit.NonFiniteError, match=r"v holds 1 NaN and 0 Inf of \(1, 1, 5, 4\)"
            ):
                attnkit.attention(q, k, v)
        v[0, 0, 2, 1] = 0.0
        attnkit.attention(q, k, v)  # finite: checked, no error (and not remembered)
        v[0, 0, 2, 1] = float("inf")
        with pytest.raises(attnkit.NonFiniteError, match=r"v holds 0 NaN and 1 Inf"):
            attnkit.attention(q, k, v)
    finally:
        attnkit.set_checks(False)


class Blows(nn.Module):
    """A model whose second layer turns large inputs into inf."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.attn = attnkit.MultiHeadAttention(3, 1, batch_first=True)
        self.second = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        h = self.attn(h.unsqueeze(1), need_weights=False)[0].squeeze(1)
        return torch.exp(self.second(h) * 1e4)


def test_watch_names_the_first_module_with_non_finite_output() -> None:
    model = Blows()
    with torch.no_grad():
        model.second.weight.fill_(1.0)
    x = torch.full((2, 3), 10.0)
    with pytest.raises(attnkit.NonFiniteError, match=r"<model> \(Blows\)"), watch(model):
        model(x)
    with torch.no_grad():
        model.first.weight.fill_(float("nan"))
    assert locate(model, lambda: model(x)) == "first (Linear)"


class DivergingTask:
    metric, higher_is_better = "loss", False

    def __init__(self) -> None:
        self.x = torch.full((4, 3), 10.0)

    def train_batches(self, epoch, generator):
        return [self.x] * 3

    def loss(self, model, batch):
        return StepLoss(model(batch).mean(), 4)

    def evaluate(self, model):
        return {"loss": 0.0}

    def checkpoint_extras(self):
        from attnkit.training import CheckpointExtras

        return CheckpointExtras()


def test_trainer_says_where_the_loss_became_non_finite() -> None:
    model = Blows()
    with torch.no_grad():
        model.attn.out_proj.weight.fill_(float("inf"))
    with pytest.raises(
        TrainingDiverged, match=r"non-finite output is that of attn.out_proj \(Linear\)"
    ):
        Trainer(model, DivergingTask(), TrainConfig(max_steps=2)).fit()
