"""attnkit.explain.viewer: the self-contained HTML page (its behaviour in a real browser is in
test_viewer_chromium.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.explain import record, render_viewer, write_viewer
from attnkit.layers.base import AttentionLayer

TRICKY = ["<s>", "</script>", "<b>bold</b>", "a & b", '"q"', "<!--", "it"]


def embedded(page: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="attnkit-data">(.*?)</script>', page, re.S
    )
    assert match is not None
    return json.loads(match.group(1))


def layers(n: int = 2, h: int = 3, lq: int = 7, lk: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, h, lq, lk, generator=g), dim=-1)  # (N, H, Lq, Lk)


def test_page_is_self_contained_and_tokens_cannot_break_it() -> None:
    page = render_viewer(layers(), tokens=TRICKY, title="<i>x</i> & y")
    # one file, no network: no external scripts, styles, images or fonts
    assert not re.search(r"<script[^>]+src=|<link\b|<img\b|@import|url\(", page, re.I)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    # the tokens stay inside the JSON: exactly the page's own two script elements close
    assert len(re.findall(r"</script", page, re.I)) == 2
    assert "<b>bold" not in page and "<!--" not in page
    assert "<title>&lt;i&gt;x&lt;/i&gt; &amp; y</title>" in page
    data = embedded(page)
    assert data["queries"] == TRICKY and data["keys"] == TRICKY and data["selfAttention"]


def test_weights_are_embedded_per_layer_and_head() -> None:
    attn = layers(n=2, h=3)
    data = embedded(render_viewer(attn, tokens=TRICKY, decimals=5))
    assert [layer["name"] for layer in data["layers"]] == ["layer 0", "layer 1"]
    np.testing.assert_allclose(np.array(data["layers"][1]["heads"]), attn[1].numpy(), atol=5e-6)


def test_cross_attention_and_the_accepted_forms(tmp_path: Path) -> None:
    src, tgt = ["drei", "hundert", "vier"], ["three", "hundred", "four", "<eos>"]
    attn = layers(n=1, h=2, lq=4, lk=3)
    data = embedded(render_viewer({"dec.cross": attn[0]}, tokens=tgt, key_tokens=src))
    assert data["queries"] == tgt and data["keys"] == src and not data["selfAttention"]
    assert data["layers"][0]["name"] == "dec.cross"
    batched = torch.stack([attn[0] * 0, attn[0]])  # (B=2, H, Lq, Lk)
    for form in ([batched], batched[None], batched.numpy()[None]):
        got = embedded(render_viewer(form, tokens=tgt, key_tokens=src, example=1))
        np.testing.assert_allclose(np.array(got["layers"][0]["heads"]), attn[0], atol=1e-4)
    out = write_viewer([attn[0]], tmp_path / "v.html", tokens=tgt, key_tokens=src)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["v.html"]


class Tiny(AttentionLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(x @ x.transpose(-1, -2), dim=-1)  # (B, L, L)
        self.report(w[:, None])  # (B, 1, L, L)
        return w @ x


def test_a_recording_can_be_shown_directly() -> None:
    model = torch.nn.Sequential(Tiny(), Tiny())
    x = torch.randn(1, 4, 3)
    with record(model) as rec:
        model(x)
    data = embedded(render_viewer(rec, tokens=["a", "b", "c", "d"]))
    assert [layer["name"] for layer in data["layers"]] == ["0", "1"]
    np.testing.assert_allclose(np.array(data["layers"][0]["heads"]), rec.single("0")[0], atol=1e-4)


def test_bad_input_raises_clear_errors(tmp_path: Path) -> None:
    attn = layers()
    with pytest.raises(ValueError, match=r"layer 'layer 0'.*\(3, 7, 7\).*6 query tokens"):
        render_viewer(attn, tokens=TRICKY[:6])
    with pytest.raises(ValueError, match="wrap a single layer in a list"):
        render_viewer(attn[0], tokens=TRICKY)
    with pytest.raises(ValueError, match="example=5 is out of range"):
        render_viewer([attn[:1]], tokens=TRICKY, example=5)
    bad = attn.clone()
    bad[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"layer 'layer 1'.*NaN or infinite"):
        render_viewer(bad, tokens=TRICKY)
    with pytest.raises(ValueError, match="holds no layers"):
        render_viewer([], tokens=TRICKY)
    with pytest.raises(TypeError, match="attention must be"):
        render_viewer(3, tokens=TRICKY)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"key_tokens\[0\] must be a str"):
        render_viewer(attn, tokens=TRICKY, key_tokens=[None] * 7)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="min_weight"):
        render_viewer(attn, tokens=TRICKY, min_weight=2)
    with pytest.raises(ValueError, match=r"must end in '\.html'"):
        write_viewer(attn, tmp_path / "v.htm", tokens=TRICKY)
