"""Numerical extremes for every registered kernel (issue 9).

Logits of ±1e4, values near the largest float32/float16/bfloat16, and every low-precision
dtype: the output must stay finite and equal the NumPy oracle (float64, written from the
formulas in ``tests/oracle.py``), forward and backward. Each kernel is asked by name, so a
kernel that only ``auto`` would pass over is still held to it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attnkit
from attnkit.functional import build_plan
from attnkit.kernels import kernels
from tests.oracle import allowed_matrix, np_softmax_rows

KERNELS = sorted(kernels())
# Kernels that serve the plain scaled dot product (all but the additive-score one); whether a
# kernel serves a request is asserted below, so a kernel losing a capability fails here.
DOT_KERNELS = [name for name in KERNELS if name != "additive"]
CASES = [
    pytest.param({}, id="full"),
    pytest.param({"causal": True}, id="causal"),
    pytest.param({"window": (2, 1)}, id="window"),
]


def _serves(name: str, q, k, v, **kwargs) -> bool:
    plan = build_plan(q, k, v, **kwargs)
    return kernels()[name].capabilities.refuses(plan) is None


def _oracle(q, k, v, *, scale: float, causal: bool = False, window=None) -> np.ndarray:
    """softmax(scale · q kᵀ) v in float64 with explicit masking, (B, H, Lq, Dv)."""
    qn, kn, vn = (t.double().numpy() for t in (q, k, v))
    scores = scale * qn @ kn.swapaxes(-1, -2)  # (B, H, Lq, Lk)
    allowed = allowed_matrix(q.shape[-2], k.shape[-2], causal=causal, window=window)
    weights = np_softmax_rows(scores, np.broadcast_to(allowed, scores.shape))
    return weights @ vn


def _logits_of_size(size: float, lq: int = 9, lk: int = 13, d: int = 8, seed: int = 0):
    """q, k, v whose scaled scores spread over about ±size (with near-ties at the top)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 2, lq, d, generator=g, dtype=torch.float64)
    k = torch.randn(1, 2, lk, d, generator=g, dtype=torch.float64)
    v = torch.randn(1, 2, lk, 5, generator=g, dtype=torch.float64)
    scores = q @ k.transpose(-1, -2)  # (1, 2, Lq, Lk)
    q = q * (size / float(scores.abs().max()))
    return q.float(), k.float(), v.float()


def _needs_window(name: str, kwargs: dict) -> dict:
    """``local`` serves windows only: give it the widest one (the same as full attention)."""
    if name == "local" and "window" not in kwargs:
        return {**kwargs, "window": (10**6, 0 if kwargs.get("causal") else 10**6)}
    return kwargs


@pytest.mark.parametrize("kwargs", CASES)
@pytest.mark.parametrize("size", [1e2, 1e4])
@pytest.mark.parametrize("name", DOT_KERNELS)
def test_huge_logits_stay_finite_and_exact(name: str, size: float, kwargs: dict) -> None:
    q, k, v = _logits_of_size(size)
    kwargs = _needs_window(name, kwargs)
    assert _serves(name, q, k, v, scale=1.0, **kwargs), name
    q.requires_grad_(True)
    out = attnkit.attention(q, k, v, scale=1.0, backend=name, **kwargs)
    want = _oracle(q.detach(), k, v, scale=1.0, causal=kwargs.get("causal", False),
                   window=kwargs.get("window"))
    assert torch.isfinite(out).all(), name
    # At ±1e4 a float32 logit carries an absolute error of ~1e-3, so weights of near-tied keys
    # can move by that much: the bound is float32's own error at this size, not a loosened one.
    tol = 1e-4 + 4 * size * torch.finfo(torch.float32).eps
    np.testing.assert_allclose(out.detach().double().numpy(), want, atol=tol, rtol=0)
    out.sum().backward()
    assert torch.isfinite(q.grad).all(), name


def test_huge_additive_logits_stay_finite_and_exact() -> None:
    """vᵀ tanh(·) is bounded by ‖v‖₁: a v of norm 1e4 gives logits of ±1e4."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, n, 6, generator=g) for n in (5, 11, 11))
    w_q, w_k = torch.randn(7, 6, generator=g), torch.randn(7, 6, generator=g)
    vec = torch.randn(7, generator=g)
    vec = vec * (1e4 / float(vec.abs().sum()))
    score = attnkit.Score("additive", w_q=w_q, w_k=w_k, v=vec)
    hidden = torch.tanh((q @ w_q.T).unsqueeze(-2) + (k @ w_k.T).unsqueeze(-3))  # (1,2,5,11,7)
    scores = (hidden.double() @ vec.double()).numpy()  # (1, 2, 5, 11)
    want = np_softmax_rows(scores, np.ones_like(scores, dtype=bool)) @ v.double().numpy()
    for name in ("additive", "reference"):
        out = attnkit.attention(q, k, v, score=score, backend=name)
        assert torch.isfinite(out).all(), name
        np.testing.assert_allclose(out.double().numpy(), want, atol=1e-4 + 4e4 * 1.2e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", DOT_KERNELS)
def test_values_near_the_largest_float_do_not_overflow(name: str, dtype: torch.dtype) -> None:
    """The output is a convex combination of v, so v at 90 % of the dtype's maximum must give
    finite outputs even over many keys with equal scores (an un-normalised running sum would
    overflow)."""
    big = 0.9 * torch.finfo(dtype).max
    lk = 64
    q = torch.zeros(1, 1, 3, 4, dtype=dtype)  # every score 0: uniform weights
    k = torch.randn(1, 1, lk, 4).to(dtype)
    v = torch.full((1, 1, lk, 2), big, dtype=dtype)
    v[..., 1] = -big
    kwargs = _needs_window(name, {})
    assert _serves(name, q, k, v, **kwargs), (name, dtype)
    out = attnkit.attention(q, k, v, backend=name, **kwargs)
    assert out.dtype == dtype
    assert torch.isfinite(out).all(), (name, out)
    expected = torch.tensor([big, -big], dtype=torch.float64)
    rel = ((out.double() - expected).abs() / big).max()
    assert rel < 2 * torch.finfo(dtype).eps * 8, (name, float(rel))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kwargs", CASES)
@pytest.mark.parametrize("name", DOT_KERNELS)
def test_low_precision_within_the_references_own_error(
    name: str, dtype: torch.dtype, kwargs: dict
) -> None:
    """flash-attn's rule: a kernel's error in ``dtype`` (against float64) is at most twice
    that of the plain PyTorch computation in ``dtype`` (materialise, softmax, matmul), plus a
    few ulps."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, n, 16, generator=g) for n in (17, 23, 23))
    lq, lk = q.shape[-2], k.shape[-2]
    exact = torch.from_numpy(_oracle(q, k, v, scale=16**-0.5, **kwargs))
    allowed = torch.from_numpy(allowed_matrix(lq, lk, **kwargs))
    ql, kl, vl = (t.to(dtype) for t in (q, k, v))
    scores = (ql @ kl.transpose(-1, -2)) * 16**-0.5  # (2, 2, Lq, Lk) in dtype
    plain = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ vl
    own = float((plain.double() - exact).abs().max())
    served = _needs_window(name, kwargs)
    assert _serves(name, ql, kl, vl, **served), (name, dtype)
    got = attnkit.attention(ql, kl, vl, backend=name, **served)
    assert got.dtype == dtype
    err = float((got.double() - exact).abs().max())
    assert err <= 2 * own + 4 * torch.finfo(dtype).eps, (name, err, own)


def test_all_masked_rows_under_huge_logits_are_zero_not_nan() -> None:
    q, k, v = _logits_of_size(1e4, lq=4, lk=6)
    mask = torch.ones(1, 1, 4, 6, dtype=torch.bool)
    mask[..., 1, :] = False
    for name in DOT_KERNELS:
        kwargs = _needs_window(name, {"mask": mask})
        assert _serves(name, q, k, v, **kwargs), name
        out = attnkit.attention(q, k, v, backend=name, **kwargs)
        assert torch.isfinite(out).all(), name
        assert torch.all(out[..., 1, :] == 0), name
