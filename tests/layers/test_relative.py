"""RelativeMultiHeadAttention against relative attention written out directly (Shaw et al.
2018 / Huang et al. 2018, with the L×L×D tensor of embeddings), and its KV cache against the
full pass."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.layers import KVCache
from attnkit.layers.relative import RelativeMultiHeadAttention

E, H, B = 12, 3, 2


def direct(layer: RelativeMultiHeadAttention, x: torch.Tensor):
    """softmax((q kᵀ + q Eᵣ[clip(j - i)]ᵀ) / √d) v with a materialised (L, L, Dh) embedding
    tensor; returns (output (B, L, E), weights (B, H, L, L))."""
    b, n, _ = x.shape
    dh = E // H
    heads = lambda t: t.reshape(b, n, H, dh).transpose(1, 2)  # noqa: E731  (B, H, L, Dh)
    wq, wk, wv = layer.in_proj_weight.chunk(3)  # PyTorch's packed layout: query, key, value
    bq, bk, bv = layer.in_proj_bias.chunk(3)
    q, k, v = (heads(torch.nn.functional.linear(x, w, b)) for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    far = layer.max_distance - 1
    idx = torch.tensor([[far + max(min(j - i, 0), -far) for j in range(n)] for i in range(n)])
    a = layer.relative[:, idx]  # (H, L, L, Dh): a[h, i, j] embeds distance clip(j - i)
    scores = (q @ k.transpose(-1, -2) + torch.einsum("bhid,hijd->bhij", q, a)) / math.sqrt(dh)
    future = torch.ones(n, n, dtype=torch.bool).triu(1)
    weights = scores.masked_fill(future, float("-inf")).softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, E)
    return layer.out_proj(out), weights


@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize(("length", "max_distance"), [(1, 4), (9, 9), (9, 16), (11, 4)])
def test_layer_equals_direct_relative_attention(backend, length, max_distance) -> None:
    layer = RelativeMultiHeadAttention(
        E, H, max_distance=max_distance, backend=backend, dtype=torch.float64
    ).eval()
    x = torch.randn(B, length, E, dtype=torch.float64)
    out, weights = layer(x, average_attn_weights=False)
    want_out, want_weights = direct(layer, x)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(weights, want_weights)


def test_auto_backend_equals_direct_relative_attention() -> None:
    # "auto" picks sdpa (no weights asked): a float bias together with causal=True
    layer = RelativeMultiHeadAttention(E, H, max_distance=8, dtype=torch.float64).eval()
    x = torch.randn(B, 6, E, dtype=torch.float64, requires_grad=True)
    out = layer(x, need_weights=False)[0]
    want = direct(layer, x)[0]
    torch.testing.assert_close(out, want)
    grads = torch.autograd.grad(out.square().sum(), [x, layer.relative])
    want_grads = torch.autograd.grad(want.square().sum(), [x, layer.relative])
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_gradients_match_the_direct_computation() -> None:
    layer = RelativeMultiHeadAttention(E, H, max_distance=5, backend="chunked",
                                       dtype=torch.float64)
    x = torch.randn(B, 7, E, dtype=torch.float64)
    ours = torch.autograd.grad(layer(x)[0].square().sum(), [layer.relative, layer.in_proj_weight])
    theirs = torch.autograd.grad(
        direct(layer, x)[0].square().sum(), [layer.relative, layer.in_proj_weight]
    )
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("prefill", [1, 4])
def test_kv_cached_steps_equal_the_full_pass(prefill: int) -> None:
    layer = RelativeMultiHeadAttention(E, H, max_distance=6, backend="chunked",
                                       dtype=torch.float64).eval()
    x = torch.randn(B, 10, E, dtype=torch.float64)  # longer than max_distance: clipping too
    full, full_weights = layer(x)
    cache = KVCache()
    outs, rows = [], []
    with torch.no_grad():
        out, w = layer(x[:, :prefill], cache=cache)
        outs.append(out)
        rows.append(torch.nn.functional.pad(w, (0, 10 - w.shape[-1])))
        for t in range(prefill, 10):
            out, w = layer(x[:, t : t + 1], cache=cache)
            outs.append(out)
            rows.append(torch.nn.functional.pad(w, (0, 10 - w.shape[-1])))
    torch.testing.assert_close(torch.cat(outs, dim=1), full.detach())
    torch.testing.assert_close(torch.cat(rows, dim=1), full_weights.detach())
    assert len(cache) == 10


def test_key_padding_mask_hides_keys() -> None:
    layer = RelativeMultiHeadAttention(E, H, max_distance=8, backend="reference").eval()
    x = torch.randn(1, 5, E)
    pad = torch.tensor([[False, True, False, False, False]])  # PyTorch polarity: True = padding
    _, weights = layer(x, key_padding_mask=pad)
    assert torch.all(weights[0, 1:, 1] == 0)


def test_unbatched_input() -> None:
    layer = RelativeMultiHeadAttention(E, H, max_distance=8, backend="reference").eval()
    x = torch.randn(5, E)
    out, weights = layer(x)
    assert out.shape == (5, E) and weights.shape == (5, 5)
    torch.testing.assert_close(out, layer(x.unsqueeze(0))[0][0])


def test_bad_use_raises_clearly() -> None:
    layer = RelativeMultiHeadAttention(E, H, max_distance=8)
    x = torch.randn(1, 5, E)
    with pytest.raises(ValueError, match="self-attention"):
        layer(x, torch.randn(1, 5, E))
    with pytest.raises(ValueError, match="causal"):
        layer(x, is_causal=False)
    with pytest.raises(ValueError, match="growing KVCache"):
        layer(x, cache=KVCache(static=True))
    with pytest.raises(ValueError, match="12 features"):
        layer(torch.randn(1, 5, 7))
    with pytest.raises(ValueError, match="max_distance"):
        RelativeMultiHeadAttention(E, H, max_distance=0)
