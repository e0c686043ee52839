"""The four wrong answers a careful user found in attnkit.MultiHeadAttention / attnkit.attention,
each checked against torch (torch.nn.MultiheadAttention, scaled_dot_product_attention) or a
dense bool mask written out here."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.attention.bias import causal_lower_right, causal_upper_left

import attnkit
from tests.compat._helpers import accepting

E, H, B = 8, 2, 2


def pair(dtype: torch.dtype = torch.float32) -> tuple[nn.MultiheadAttention, attnkit.MultiHeadAttention]:
    theirs = nn.MultiheadAttention(E, H, batch_first=True, dtype=dtype).eval()
    return theirs, attnkit.MultiHeadAttention.from_torch(theirs)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
@pytest.mark.parametrize("which", ["key_padding_mask", "attn_mask"])
def test_integer_masks_are_refused_as_torch_refuses_them(dtype, which) -> None:
    theirs, ours = pair()
    x = torch.randn(B, 5, E)
    shape = (B, 5) if which == "key_padding_mask" else (5, 5)
    mask = torch.zeros(shape, dtype=dtype)
    with pytest.raises(AssertionError, match="only bool and floating types"):
        theirs(x, x, x, **{which: mask})
    with pytest.raises(TypeError, match=rf"{which} must be bool .* or float.*got {dtype}"):
        ours(x, x, x, **{which: mask})


def _dense_causal(lq: int, lk: int, variant: str) -> torch.Tensor:
    offset = lk - lq if variant == "lower_right" else 0
    return torch.ones(lq, lk, dtype=torch.bool).tril(offset)  # True = may attend


@pytest.mark.parametrize(("lq", "lk"), [(5, 5), (3, 7), (7, 3)])
@pytest.mark.parametrize("variant", ["lower_right", "upper_left"])
def test_torch_causal_bias_is_causal_structure_on_every_backend(lq, lk, variant) -> None:
    make = causal_lower_right if variant == "lower_right" else causal_upper_left
    q, k, v = torch.randn(B, H, lq, 8), torch.randn(B, H, lk, 8), torch.randn(B, H, lk, 8)
    dense = _dense_causal(lq, lk, variant)
    with pytest.warns(UserWarning) if (variant, lq > lk) == ("lower_right", True) else _no_warn():
        bias = make(lq, lk)
    want = attnkit.attention(q, k, v, mask=dense, backend="reference")
    backends = accepting(q, k, v, mask=bias)
    assert {"reference", "chunked", "sdpa"} <= set(backends)
    for backend in ["auto", *backends]:
        got = attnkit.attention(q, k, v, mask=bias, backend=backend)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=backend)
    if variant == "upper_left" or lq <= lk:  # rows with a key: torch's own answer
        sdpa = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=make(lq, lk))
        torch.testing.assert_close(want, sdpa, atol=1e-5, rtol=1e-5)


class _no_warn:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_other_tensor_subclasses_are_refused_by_name() -> None:
    class Odd(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            return super().__torch_function__(func, types, args, kwargs or {})

    q = torch.randn(1, 1, 3, 4)
    odd = torch.zeros(3, 3).as_subclass(Odd)
    with pytest.raises(TypeError, match=r"mask: .*Odd.* cannot be read"):
        attnkit.attention(q, q, q, mask=odd)
    param = nn.Parameter(torch.zeros(3, 3))  # a learned bias is a plain tensor to attnkit
    torch.testing.assert_close(attnkit.attention(q, q, q, mask=param), attnkit.attention(q, q, q))


def test_is_causal_is_a_hint_and_the_mask_counts_when_queries_outnumber_keys() -> None:
    theirs, ours = pair()
    length, s = 5, 3
    query, memory = torch.randn(B, length, E), torch.randn(B, s, E)
    top_left = ~torch.ones(length, s, dtype=torch.bool).tril()  # True = hidden (torch)
    for need_weights in (True, False):
        want, _ = theirs(query, memory, memory, attn_mask=top_left, is_causal=True,
                         need_weights=need_weights)
        got, _ = ours(query, memory, memory, attn_mask=top_left, is_causal=True,
                      need_weights=need_weights)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_float64_module_keeps_float64_masks() -> None:
    theirs, ours = pair(torch.float64)
    x = torch.randn(B, 5, E, dtype=torch.float64)
    bias = torch.randn(5, 5, dtype=torch.float64)
    padding = torch.randn(B, 5, dtype=torch.float64)
    want, want_w = theirs(x, x, x, attn_mask=bias, key_padding_mask=padding)
    got, got_w = ours(x, x, x, attn_mask=bias, key_padding_mask=padding)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got_w, want_w, atol=1e-12, rtol=1e-12)


def test_causal_bias_errors_name_the_problem() -> None:
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match=r"CausalBias is for \(Lq, Lk\) = \(3, 4\)"):
        attnkit.attention(q, q, q, mask=causal_upper_left(3, 4))
    with pytest.raises(TypeError, match="came out of a tensor operation"):
        attnkit.attention(q, q, q, mask=causal_upper_left(4, 4).unsqueeze(0))
