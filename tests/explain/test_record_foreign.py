"""attnkit.explain.record with attention that runs through attnkit outside its own layers (what
the transformers backend does): any module of an accepted model may report weights, and only
while a block that watches it is open; ``transform`` keeps a compressed form instead.

The weights are checked against softmax(q kᵀ/√d) written out here."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import attnkit
from attnkit.explain import record
from attnkit.explain.record import (
    recorded_weights,
    register_foreign_attention,
    report_weights,
    wants_weights,
)


class ForeignAttention(nn.Module):
    """Attention in another library's style: no AttentionLayer, it asks and reports."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.asked = 0

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, length, dim = x.shape
        return tuple(
            t.view(b, length, self.heads, dim // self.heads).transpose(1, 2)
            for t in self.qkv(x).chunk(3, dim=-1)
        )  # (B, H, L, D) each

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.split(x)
        want = wants_weights(self)
        self.asked += int(want)
        result = attnkit.attention(q, k, v, return_weights=want)
        out, weights = result if want else (result, None)
        if want:
            report_weights(self, weights)
        return out.transpose(1, 2).reshape(b, length, dim)


class ForeignModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ForeignAttention(), ForeignAttention()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


register_foreign_attention(lambda model: isinstance(model, ForeignModel))


def expected(block: ForeignAttention, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        q, k, _ = (
            t.view(*x.shape[:2], block.heads, -1).transpose(1, 2).double()
            for t in block.qkv(x).chunk(3, dim=-1)
        )
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)


def test_foreign_modules_report_only_inside_the_block() -> None:
    model = ForeignModel()
    x = torch.randn(2, 5, 8)
    model(x)
    assert [b.asked for b in model.blocks] == [0, 0]
    with torch.no_grad(), record(model) as rec:
        model(x)
    assert rec.names() == ["blocks.0", "blocks.1"]
    inner = x + model.blocks[0](x)
    for name, block, inputs in (("blocks.0", model.blocks[0], x), ("blocks.1", model.blocks[1], inner)):
        got = rec.single(name).double()
        assert (got - expected(block, inputs)).abs().max() < 1e-5
    assert list(rec.layers()) == ["blocks.0", "blocks.1"]
    model(x)
    assert [b.asked for b in model.blocks] == [1, 1]  # nothing asked after the block


def test_include_and_transform() -> None:
    model = ForeignModel()
    with torch.no_grad(), record(model, include="blocks.1", transform=lambda w: w.amax(-1)) as rec:
        model(torch.randn(1, 4, 8))
    assert rec.names() == ["blocks.1"]
    assert model.blocks[0].asked == 0
    assert rec["blocks.1"][0].shape == (1, 2, 4)  # what transform returned


def test_nested_blocks_both_see_the_weights() -> None:
    model = ForeignModel()
    with record(model) as outer:
        with record(model, include="blocks.0") as inner:
            model(torch.randn(1, 3, 8))
        model(torch.randn(1, 3, 8))
    assert len(inner["blocks.0"]) == 1 and "blocks.1" not in inner
    assert len(outer["blocks.0"]) == 2 and len(outer["blocks.1"]) == 2


def test_other_models_are_still_refused() -> None:
    with pytest.raises(ValueError, match="holds 0 attnkit attention layer"):
        record(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="transform must be callable"):
        record(ForeignModel(), transform=3)


class SummarisingAttention(ForeignAttention):
    """Asks attnkit for what the open blocks want (recorded_weights), as the transformers
    backend does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(x)
        want = recorded_weights(self)
        self.asked_for = want
        result = attnkit.attention(q, k, v, return_weights=want)
        if want is not False:
            report_weights(self, result[1])
        return x


class SummarisingModel(ForeignModel):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([SummarisingAttention()])


register_foreign_attention(lambda model: isinstance(model, SummarisingModel))


def test_foreign_modules_are_asked_for_the_summary_the_blocks_share() -> None:
    model = SummarisingModel()
    block = model.blocks[0]
    x = torch.randn(2, 5, 8)
    with torch.no_grad(), record(model, weights="key_totals") as totals:
        model(x)
    assert block.asked_for == "key_totals"
    want = expected(block, x).sum(dim=2)  # (B, H, Lk)
    assert (totals.single("blocks.0").double() - want).abs().max() < 1e-5
    with torch.no_grad(), record(model, weights="key_totals") as totals, record(
        model, weights="heads_mean"
    ) as mean:
        model(x)
    assert block.asked_for is True  # two different summaries: the full weights, reduced by each
    assert (totals.single("blocks.0").double() - want).abs().max() < 1e-5
    assert (mean.single("blocks.0").double() - expected(block, x).mean(dim=1)).abs().max() < 1e-5
