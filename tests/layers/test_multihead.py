"""MultiHeadAttention against torch.nn.MultiheadAttention, and its KV cache against the full pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnkit
from attnkit.layers import KVCache, MultiHeadAttention

E, H, B, L, S = 16, 4, 3, 5, 7


def pair(batch_first: bool = True, **kwargs) -> tuple[nn.MultiheadAttention, MultiHeadAttention]:
    theirs = nn.MultiheadAttention(E, H, batch_first=batch_first, **kwargs).eval()
    return theirs, MultiHeadAttention.from_torch(theirs)


def inputs(batch_first: bool = True, kdim: int = E, vdim: int = E):
    q, k, v = torch.randn(B, L, E), torch.randn(B, S, kdim), torch.randn(B, S, vdim)
    if not batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    return q, k, v


def padding(as_float: bool = False) -> torch.Tensor:
    kpm = torch.zeros(B, S, dtype=torch.bool)  # True = padding (PyTorch's polarity)
    kpm[1, 4:] = True
    kpm[2, 6:] = True
    return torch.zeros(B, S).masked_fill(kpm, float("-inf")) if as_float else kpm


def attn_mask(kind: str) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "bool2d":
        m = torch.rand(L, S) > 0.7
        m[:, 0] = False  # every query keeps a key
        return m
    if kind == "float2d":
        return torch.randn(L, S)
    if kind == "bool3d":
        m = torch.rand(B * H, L, S) > 0.7
        m[..., 0] = False
        return m
    raise AssertionError(kind)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "bool2d", "float2d", "bool3d"])
@pytest.mark.parametrize("kpm_kind", ["none", "bool", "float"])
@pytest.mark.parametrize("average", [True, False])
def test_from_torch_matches_outputs_and_weights(batch_first, mask_kind, kpm_kind, average) -> None:
    theirs, ours = pair(batch_first)
    q, k, v = inputs(batch_first)
    kwargs = {
        "attn_mask": attn_mask(mask_kind),
        "key_padding_mask": None if kpm_kind == "none" else padding(kpm_kind == "float"),
        "average_attn_weights": average,
    }
    masks = [kwargs["attn_mask"], kwargs["key_padding_mask"]]
    if any(m is not None and m.is_floating_point() for m in masks):
        for name in ("attn_mask", "key_padding_mask"):  # PyTorch wants one mask type
            m = kwargs[name]
            if m is not None and m.dtype == torch.bool:
                kwargs[name] = torch.zeros(m.shape).masked_fill(m, float("-inf"))
    want, want_w = theirs(q, k, v, **kwargs)
    got, got_w = ours(q, k, v, **kwargs)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_w, want_w, atol=1e-6, rtol=1e-4)


def test_from_torch_causal_need_weights_false_and_unbatched() -> None:
    theirs, ours = pair()
    x = torch.randn(B, L, E)
    causal = nn.Transformer.generate_square_subsequent_mask(L).isinf()  # bool, True = hidden
    want, _ = theirs(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)
    got, got_w = ours(x, x, x, is_causal=True, need_weights=False)
    assert got_w is None
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    want, want_w = theirs(x[0], x[0], x[0])
    got, got_w = ours(x[0], x[0], x[0])
    assert got.shape == (L, E) and got_w.shape == (L, L)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_w, want_w, atol=1e-6, rtol=1e-4)


def test_from_torch_kdim_vdim_and_no_bias() -> None:
    theirs = nn.MultiheadAttention(E, H, kdim=6, vdim=10, bias=False, batch_first=True).eval()
    ours = MultiHeadAttention.from_torch(theirs)
    q, k, v = inputs(kdim=6, vdim=10)
    torch.testing.assert_close(ours(q, k, v)[0], theirs(q, k, v)[0], atol=1e-5, rtol=1e-4)


def test_gradients_agree_with_torch() -> None:
    theirs, ours = pair()
    q, k, v = inputs()
    kpm = padding()
    (theirs(q, k, v, key_padding_mask=kpm)[0] ** 2).sum().backward()
    (ours(q, k, v, key_padding_mask=kpm)[0] ** 2).sum().backward()
    for name, want in theirs.named_parameters():
        got = ours.get_parameter(name).grad
        torch.testing.assert_close(got, want.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_dropout_in_training_only() -> None:
    ours = MultiHeadAttention(E, H, dropout=0.5, batch_first=True)
    x = torch.randn(B, L, E)
    ours.eval()
    a, b = ours(x)[0], ours(x)[0]
    torch.testing.assert_close(a, b)
    ours.train()
    assert not torch.allclose(ours(x)[0], ours(x)[0])


def test_grouped_query_equals_multi_head_with_repeated_kv_projections() -> None:
    grouped = MultiHeadAttention(E, H, batch_first=True, num_kv_heads=2).eval()
    full = MultiHeadAttention(E, H, batch_first=True).eval()
    dh = E // H
    with torch.no_grad():
        full.out_proj.load_state_dict(grouped.out_proj.state_dict())
        bq, bk, bv = grouped.in_proj_bias.split((E, 2 * dh, 2 * dh))

        def repeat(t: torch.Tensor) -> torch.Tensor:  # (2·Dh, ...) -> (E, ...): each head twice
            return t.reshape(2, dh, *t.shape[1:]).repeat_interleave(2, dim=0).flatten(0, 1)

        full.in_proj_weight.copy_(
            torch.cat([grouped.q_proj_weight, repeat(grouped.k_proj_weight),
                       repeat(grouped.v_proj_weight)])
        )
        full.in_proj_bias.copy_(torch.cat([bq, repeat(bk), repeat(bv)]))
    x = torch.randn(B, L, E)
    got, got_w = grouped(x, is_causal=True, average_attn_weights=False)
    want, want_w = full(x, is_causal=True, average_attn_weights=False)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_w, want_w)


@pytest.mark.parametrize("positions", ["none", "rope", "alibi"])
@pytest.mark.parametrize("kv_heads", [H, 2, 1])
def test_kv_cache_decoding_equals_the_full_causal_pass(positions: str, kv_heads: int) -> None:
    layer = MultiHeadAttention(
        E, H, batch_first=True, num_kv_heads=kv_heads, positions=positions
    ).eval()
    x = torch.randn(2, 9, E)
    full, _ = layer(x, is_causal=True)
    cache = KVCache()
    with torch.no_grad():
        prefix, _ = layer(x[:, :4], is_causal=True, cache=cache)  # a prompt of 4 at once
        steps = [layer(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(4, 9)]
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full, atol=1e-5, rtol=1e-4)
    assert len(cache) == 9


def test_static_cache_for_cross_attention() -> None:
    layer = MultiHeadAttention(E, H, batch_first=True).eval()
    memory, queries = torch.randn(2, 6, E), torch.randn(2, 3, E)
    full, _ = layer(queries, memory, memory)
    cache = KVCache(static=True)
    with torch.no_grad():
        steps = [layer(queries[:, t : t + 1], memory, memory, cache=cache)[0] for t in range(3)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    assert len(cache) == 6


def test_kv_cache_reorder_and_errors() -> None:
    cache = KVCache()
    k = torch.arange(2.0).reshape(2, 1, 1, 1)
    cache.append(k, k)
    cache.reorder(torch.tensor([1, 1, 0]))
    assert cache.keys.flatten().tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"KVCache.append: expected"):
        cache.append(torch.zeros(3, 2, 1, 1), torch.zeros(3, 2, 1, 1))
    with pytest.raises(ValueError, match="KVCache is empty"):
        _ = KVCache().keys


def test_module_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"num_heads \(3\) must divide embed_dim \(16\)"):
        MultiHeadAttention(16, 3)
    with pytest.raises(ValueError, match=r"num_kv_heads \(3\) must divide num_heads \(4\)"):
        MultiHeadAttention(16, 4, num_kv_heads=3)
    layer = MultiHeadAttention(E, H, batch_first=True)
    with pytest.raises(ValueError, match=r"query must have 16 features, got shape \(3, 5, 8\)"):
        layer(torch.randn(B, L, 8))
    with pytest.raises(
        ValueError, match=r"key_padding_mask must be \(batch, S\) = \(3, 5\), got \(3, 4\)"
    ):
        layer(torch.randn(B, L, E), key_padding_mask=torch.zeros(B, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask must be \(L, S\) = \(5, 5\)"):
        layer(torch.randn(B, L, E), attn_mask=torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"must be \(batch, length, features\)"):
        layer(torch.randn(1, B, L, E))
    with pytest.raises(TypeError, match=r"expects torch\.nn\.MultiheadAttention"):
        MultiHeadAttention.from_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="add_bias_kv and add_zero_attn"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(E, H, add_bias_kv=True))


def test_recording_hook_sees_per_head_weights_without_need_weights() -> None:
    layer = MultiHeadAttention(E, H, batch_first=True).eval()
    seen = []
    layer.attention_recorder = lambda module, weights: seen.append(weights)
    x = torch.randn(B, L, E)
    _, weights = layer(x, need_weights=False)
    assert weights is None and seen[0].shape == (B, H, L, L)
    torch.testing.assert_close(seen[0].sum(-1), torch.ones(B, H, L))
    layer.attention_recorder = None
    assert (
        attnkit.explain_dispatch(
            torch.randn(1, H, L, E // H), torch.randn(1, H, L, E // H), torch.randn(1, H, L, E // H)
        ).kernel
        != "reference"
    )


def test_inputs_the_projections_cannot_take_are_refused_by_name() -> None:
    """An int, float64 or other-device input failed inside F.linear ("mat1 and mat2 must have
    the same dtype"), naming neither the argument nor the module's dtype."""
    layer = MultiHeadAttention(E, H, batch_first=True)
    x = torch.randn(B, L, E)
    with pytest.raises(TypeError, match=r"query must be a floating-point tensor, got dtype torch\.int64"):
        layer(x.long(), x, x)
    with pytest.raises(TypeError, match=r"key is torch\.float64 but the module's parameters are torch\.float32"):
        layer(x, x.double(), x)
    with pytest.raises(ValueError, match=r"value is on meta but the module's parameters are on cpu"):
        layer(x, x, x.to("meta"))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts for the projections
        out, _ = layer(x.bfloat16(), x.bfloat16(), x.bfloat16())
    assert out.shape == (B, L, E)
