"""PyTorch's own scaled_dot_product_attention tests, ported to attnkit.attention.

Source: pytorch/pytorch, ``test/test_transformers.py`` at commit
00030eb8e81f911c48c4d7634fa6b8bb2fae1a1b (the version torch 2.13's SDPA follows):
``TestTransformers.test_scaled_dot_product_attention`` (its ``sdp_ref``), ``TestSDPA`` (math
gradcheck, the mask-vs-math grid, the banded ``-inf`` mask, the negative scale) and
``TestAttnBias`` (``CausalBias`` variants). Each case is run by every attnkit kernel that
accepts it, against the original's reference with the original's tolerance
(``assertEqual``'s defaults unless the test names others).

Adaptations, each for a reason:
- attnkit takes 4-D ``(B, H, L, D)``: 3-D cases get a heads axis of 1.
- A query row whose keys are all masked: PyTorch gives NaN, attnkit 0 (DESIGN.md); those rows
  are compared as "attnkit gives 0", the rest as in the original.
- ``is_causal=True`` in SDPA is top-left (``causal_upper_left``); attnkit's ``causal=True`` is
  bottom-right, so the top-left cases pass ``mask=causal_upper_left(L, S)``.
- SDPA refuses ``attn_mask`` together with ``is_causal``; attnkit hides what either hides.
- Dropout cases are not ported: they compare PyTorch's random stream, not attention.
- ``TestAttnBias`` runs in float32 (no fast CPU float16) with ``assert_close``'s float32
  tolerances, tighter than the original's float16 ones.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right, causal_upper_left

import attnkit
from tests.compat._helpers import accepting

# assertEqual's defaults (torch/testing/_comparison.py)
DEFAULT_TOL = {torch.float64: (1e-7, 1e-7), torch.float32: (1e-5, 1.3e-6)}


def assert_rows(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, msg: str):
    """``expected``'s NaN rows (a query with no key) must be 0 in ``actual``; the rest close."""
    empty = expected.isnan().any(dim=-1, keepdim=True)
    assert not actual.isnan().any(), msg
    assert (actual.masked_select(empty.expand_as(actual)) == 0).all(), msg
    torch.testing.assert_close(
        actual.masked_fill(empty, 0.0), expected.masked_fill(empty, 0.0), atol=atol, rtol=rtol,
        msg=msg,
    )


# -- test_scaled_dot_product_attention: PyTorch's python sdp_ref -----------------------------


def sdp_ref(q, k, v, attn_mask=None):
    """PyTorch's ``sdp_ref`` (dropout 0): 3-D inputs, float mask added before softmax."""
    q = q / math.sqrt(q.size(-1))
    if attn_mask is not None:
        attn = torch.baddbmm(attn_mask, q, k.transpose(-2, -1))
    else:
        attn = torch.bmm(q, k.transpose(-2, -1))
    return torch.bmm(F.softmax(attn, dim=-1), v)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("input_dim", "attn_mask_dim", "is_causal"),
    [(3, None, False), (3, 2, False), (3, 2, True), (3, 3, False), (3, 3, True),
     (4, None, False), (4, 2, False), (4, 2, True), (4, 4, False), (4, 4, True)],
)
def test_scaled_dot_product_attention(input_dim, attn_mask_dim, is_causal, dtype) -> None:
    n, n_prime, lq, s, e = 5, 2, 4, 3, 6
    lead = (n,) if input_dim == 3 else (n, n_prime)
    query, key, value = (torch.randn(*lead, ln, e, dtype=dtype) for ln in (lq, s, s))
    attn_mask = None
    if attn_mask_dim is not None:
        size = (lq, s) if attn_mask_dim == 2 else (*lead, lq, s)
        attn_mask = (
            torch.ones(size, dtype=torch.bool).tril()
            if is_causal
            else torch.randint(0, 2, size=size, dtype=torch.bool)
        )
    float_mask = None
    if attn_mask is not None:
        float_mask = torch.zeros_like(attn_mask, dtype=dtype).masked_fill(~attn_mask, float("-inf"))
        if attn_mask_dim > 3:
            float_mask = float_mask.view(-1, lq, s)
    expected = sdp_ref(*(t.reshape(-1, t.shape[-2], e) for t in (query, key, value)), float_mask)
    expected = expected.view(*lead, lq, e)

    def four_d(t: torch.Tensor) -> torch.Tensor:
        return t.unsqueeze(1) if input_dim == 3 else t  # (N, 1, L, E) or (N, N', L, E)

    q, k, v = four_d(query), four_d(key), four_d(value)
    # SDPA: is_causal=True without a mask (top-left); otherwise the bool mask
    mask = causal_upper_left(lq, s) if is_causal else attn_mask
    if not is_causal and attn_mask_dim == 3:
        mask = mask.unsqueeze(1)
    atol, rtol = DEFAULT_TOL[dtype]
    for backend in accepting(q, k, v, mask=mask):
        actual = attnkit.attention(q, k, v, mask=mask, backend=backend)
        assert_rows(actual.reshape(expected.shape), expected, atol, rtol, backend)


def test_mask_and_causal_together_hide_what_either_hides() -> None:
    """SDPA's math backend raises "Explicit attn_mask should not be set when is_causal=True";
    its default CPU path hides what either hides, which is attnkit's documented meaning."""
    q, k, v = (torch.randn(2, 2, 6, 8) for _ in range(3))
    mask = torch.rand(6, 6) > 0.3
    mask[:, 0] = True
    with sdpa_kernel(backends=[SDPBackend.MATH]), pytest.raises(
        RuntimeError, match="Explicit attn_mask should not be set"
    ):
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True)
    both = mask & torch.ones(6, 6, dtype=torch.bool).tril()
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=both)
    torch.testing.assert_close(
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True), want
    )
    for backend in accepting(q, k, v, mask=mask, causal=True):
        got = attnkit.attention(q, k, v, mask=mask, causal=True, backend=backend)
        torch.testing.assert_close(got, want, msg=backend)


# -- TestSDPA ------------------------------------------------------------------------------


@pytest.mark.parametrize("contiguous_inputs", [True, False])
def test_sdp_math_gradcheck(contiguous_inputs: bool) -> None:
    batch_size, seq_len, num_heads, head_dim = 4, 4, 2, 16
    qkv = torch.randn(batch_size, seq_len, 3 * num_heads * head_dim, dtype=torch.float64)
    parts = [
        p.view(batch_size, -1, num_heads, head_dim).transpose(1, 2) for p in qkv.chunk(3, dim=-1)
    ]
    if contiguous_inputs:
        parts = [p.contiguous() for p in parts]
    q, k, v = (p.detach().requires_grad_() for p in parts)
    backends = accepting(q, k, v)
    assert {"reference", "chunked", "sdpa"} <= set(backends)
    for backend in backends:
        assert torch.autograd.gradcheck(  # fast_mode: the time budget
            lambda q, k, v, backend=backend: attnkit.attention(q, k, v, backend=backend),
            (q, k, v),
            fast_mode=True,
        ), backend


def _mask_shapes(mask_dim: int, b: int, h: int, lq: int, lk: int):
    if mask_dim == 2:
        return list(itertools.product([lq, 1], [lk, 1]))
    return list(itertools.product([b, 1], [h, 1], [lq, 1], [lk, 1]))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("bool_mask", [0, 1])
@pytest.mark.parametrize("mask_dim", [2, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_scaled_dot_product_fused_attention_mask_vs_math_cpu(dtype, mask_dim, bool_mask, train):
    batch_size, q_seq_len, kv_seq_len, n_head, head_dim = 2, 267, 514, 3, 8
    atol, rtol = (5e-2, 5e-2) if dtype is torch.bfloat16 else (1e-5, 5e-6)
    for mask_shape in _mask_shapes(mask_dim, batch_size, n_head, q_seq_len, kv_seq_len):
        q = torch.randn(batch_size, q_seq_len, n_head, head_dim, dtype=dtype).transpose(1, 2)
        k = torch.randn(batch_size, kv_seq_len, n_head, head_dim, dtype=dtype).transpose(1, 2)
        v = torch.randn(batch_size, kv_seq_len, n_head, head_dim, dtype=dtype).transpose(1, 2)
        if bool_mask:
            attn_mask = torch.randint(0, 2, size=mask_shape, dtype=torch.bool)
        else:
            attn_mask = torch.randn(mask_shape, dtype=dtype)
        low = dtype is torch.bfloat16
        q2, k2, v2 = ((t.float() if low else t.clone()).requires_grad_(train) for t in (q, k, v))
        ref_mask = attn_mask.float() if low and not bool_mask else attn_mask
        with sdpa_kernel(backends=[SDPBackend.MATH]):
            math_ref = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=ref_mask)
        if train:
            math_ref.sum().backward()
        for backend in accepting(q, k, v, mask=attn_mask):
            q1, k1, v1 = (t.detach().clone().requires_grad_(train) for t in (q, k, v))
            actual = attnkit.attention(q1, k1, v1, mask=attn_mask, backend=backend)
            msg = f"{backend} mask {mask_shape}"
            assert_rows(actual, math_ref.to(dtype), atol, rtol, msg)
            if not train:
                continue
            actual.sum().backward()
            for got, want in ((q1.grad, q2.grad), (k1.grad, k2.grad), (v1.grad, v2.grad)):
                if want.isnan().any():  # a query with no key: PyTorch's NaN spreads
                    assert not got.isnan().any(), msg
                else:
                    torch.testing.assert_close(got, want.to(dtype), atol=atol, rtol=rtol, msg=msg)


def test_scaled_dot_product_fused_attention_with_inf() -> None:
    """pytorch#127055: a band of -inf; attnkit also gets the same band as window=(9, 0)."""
    full = torch.full((600, 600), float("-inf"))
    mask = torch.triu(full, diagonal=1) + torch.tril(full, diagonal=-10)
    q, k, v = (torch.randn(1, 2, 600, 8) for _ in range(3))
    with sdpa_kernel(backends=[SDPBackend.MATH]):
        math_ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    for kwargs in ({"mask": mask}, {"window": (9, 0)}):
        backends = accepting(q, k, v, **kwargs)
        for backend in backends:
            actual = attnkit.attention(q, k, v, backend=backend, **kwargs)
            torch.testing.assert_close(actual, math_ref, msg=f"{backend} {list(kwargs)}")
    assert "local" in accepting(q, k, v, window=(9, 0))


def test_scaled_dot_product_attention_math_with_negative_scale() -> None:
    """pytorch#105190."""

    def ref(x):
        return torch.matmul((torch.matmul(x, x.transpose(-1, -2)) / -0.0001).softmax(dim=-1), x)

    x = torch.randn(1, 3, 64, 64)
    for backend in accepting(x, x, x, scale=-1.0 / 0.0001):
        actual = attnkit.attention(x, x, x, scale=-1.0 / 0.0001, backend=backend)
        torch.testing.assert_close(actual, ref(x), msg=backend)


# -- TestAttnBias ----------------------------------------------------------------------------

SHAPES = [(16, 16, 128, 128, 16), (16, 16, 128, 256, 32), (16, 16, 256, 128, 32), (1, 1, 23, 56, 15)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("variant", ["upper_left", "lower_right"])
def test_causal_variants(variant: str, shape) -> None:
    bsz, num_heads, seq_len_q, seq_len_kv, head_dim = shape
    make = causal_upper_left if variant == "upper_left" else causal_lower_right
    nan_rows = variant == "lower_right" and seq_len_q > seq_len_kv  # PyTorch skips: NaN rows
    with pytest.warns(UserWarning) if nan_rows else _quiet():
        attn_bias = make(seq_len_q, seq_len_kv)
    query = torch.rand(bsz, num_heads, seq_len_q, head_dim, requires_grad=True)
    key, value = (torch.rand(bsz, num_heads, seq_len_kv, head_dim, requires_grad=True)
                  for _ in range(2))
    realized = attn_bias._materialize(query.device)  # (Lq, Lk) bool, PyTorch's reference
    pytorch_output = F.scaled_dot_product_attention(query, key, value, attn_mask=realized)
    d_out = torch.randn_like(pytorch_output)
    want = torch.autograd.grad(pytorch_output, (query, key, value), d_out)
    for backend in accepting(query.detach(), key.detach(), value.detach(), mask=attn_bias):
        out = attnkit.attention(query, key, value, mask=attn_bias, backend=backend)
        assert_rows(out, pytorch_output, 1e-5, 1.3e-6, backend)
        if nan_rows:
            continue  # PyTorch's gradients are NaN there
        grads = torch.autograd.grad(out, (query, key, value), d_out)
        for got, ref in zip(grads, want, strict=True):
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4, msg=backend)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_is_causal_equals_upper_left(shape) -> None:
    bsz, num_heads, seq_len_q, seq_len_kv, head_dim = shape
    query = torch.rand(bsz, num_heads, seq_len_q, head_dim)
    key, value = (torch.rand(bsz, num_heads, seq_len_kv, head_dim) for _ in range(2))
    want = F.scaled_dot_product_attention(query, key, value, is_causal=True)
    attn_bias = causal_upper_left(seq_len_q, seq_len_kv)
    for backend in accepting(query, key, value, mask=attn_bias):
        got = attnkit.attention(query, key, value, mask=attn_bias, backend=backend)
        torch.testing.assert_close(got, want, msg=backend)


def test_is_causal_and_mask_fails() -> None:
    q = torch.rand(2, 2, 16, 8)
    with pytest.raises(ValueError, match="CausalBias should not be used with causal=True"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=causal_upper_left(16, 16), is_causal=True)
    with pytest.raises(ValueError, match="do not pass causal=True"):
        attnkit.attention(q, q, q, mask=causal_upper_left(16, 16), causal=True)
