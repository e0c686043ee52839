"""``record(model, weights=...)``: summaries of the weights recorded from attnkit layers (made
by the kernel where the layer asks for them) and shown by the viewer. The expected values are
the same reductions, written here, of the full weights recorded from the same model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import attnkit
from attnkit.explain import record, render_viewer
from attnkit.layers.base import AttentionLayer
from attnkit.layers.multihead import MultiHeadAttention


class _Self(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(16, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False, is_causal=True,
                         attn_mask=torch.ones(x.shape[1], x.shape[1]).triu(1).bool())[0]


def _recorded(weights, x: torch.Tensor, model: torch.nn.Module):
    with torch.no_grad(), record(model, weights=weights) as rec:
        model(x)
    return rec


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(_Self(), _Self()).eval()
    x = torch.randn(2, 9, 16)
    full = _recorded(True, x, model)
    return model, x, full


def test_recorded_summaries_reduce_the_full_weights(setup, monkeypatch) -> None:
    model, x, full = setup
    asked = []
    real = attnkit.layers.multihead.attention

    def spy(*args, **kwargs):
        asked.append(kwargs["return_weights"])
        return real(*args, **kwargs)

    monkeypatch.setattr(attnkit.layers.multihead, "attention", spy)
    for name in full.names():
        w = full.single(name)  # (B, H, Lq, Lk)
        assert w.shape == (2, 4, 9, 9)
    totals = _recorded("key_totals", x, model)
    mean = _recorded("heads_mean", x, model)
    top = _recorded(attnkit.TopK(3), x, model)
    assert asked == ["key_totals"] * 2 + ["heads_mean"] * 2 + [attnkit.TopK(3)] * 2  # the kernel
    for name in full.names():
        w = full.single(name)
        torch.testing.assert_close(totals.single(name), w.sum(dim=2))  # (B, H, Lk)
        torch.testing.assert_close(mean.single(name), w.mean(dim=1))  # (B, Lq, Lk)
        values, indices = top.single(name)  # (B, H, Lq, 3)
        torch.testing.assert_close(values, w.topk(3, dim=-1).values)
        torch.testing.assert_close(w.gather(-1, indices), values)


class _Reports(AttentionLayer):
    """A layer that computes its full weights anyway (and reports them)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(x @ x.transpose(-1, -2), dim=-1)[:, None]  # (B, 1, L, L)
        self.report(w)
        return x


def test_full_weights_are_reduced_on_arrival_and_calls_join() -> None:
    layer = _Reports()
    xs = [torch.randn(1, n, 3) for n in (4, 6)]
    with record(layer) as full, record(layer, weights="key_totals") as totals:
        for x in xs:
            layer(x)
    calls = full[""]
    torch.testing.assert_close(totals[""][1], calls[1].sum(dim=2))
    want = calls[1].sum(dim=2)  # (1, 1, 6) plus the first call's 4 keys
    want[..., :4] += calls[0].sum(dim=2)
    torch.testing.assert_close(totals.concat(""), want)  # key totals add over calls


def test_bad_weights_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="records nothing"):
        record(_Reports(), weights=False)
    with pytest.raises(ValueError, match="record: weights must be True, False, 'heads_mean'"):
        record(_Reports(), weights="totals")


def _embedded(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="attnkit-data">(.*?)</script>', page,
                      re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_the_viewer_shows_each_summary(setup) -> None:
    model, x, full = setup
    tokens = [f"t{i}" for i in range(9)]
    w = full.single("0.attn")[1]  # (H, Lq, Lk) of example 1

    data = _embedded(render_viewer(_recorded("key_totals", x, model), tokens=tokens, example=1))
    np.testing.assert_allclose(data["layers"][0]["totals"], w.sum(dim=1), atol=1e-4)  # (H, Lk)
    assert any("Key totals" in note for note in data["notes"])

    data = _embedded(render_viewer(_recorded("heads_mean", x, model), tokens=tokens, example=1))
    np.testing.assert_allclose(data["layers"][0]["heads"], w.mean(dim=0, keepdim=True), atol=1e-4)

    data = _embedded(render_viewer(_recorded(attnkit.TopK(2), x, model), tokens=tokens))
    assert data["compact"] and data["layers"][0]["k"] == 2 and data["layers"][0]["count"] == 4
