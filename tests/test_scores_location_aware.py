"""The location-aware score (Chorowski et al. 2015) against its formula, written out with loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attnkit
from attnkit.scores import Score, location_aware
from tests.oracle import np_softmax_rows

B, H, LQ, LK, DQ, DK, A, C = 2, 1, 3, 7, 5, 4, 6, 3


def params(w_k: bool = True):
    p = {
        "w_q": torch.randn(A, DQ, dtype=torch.float64),
        "w_f": torch.randn(A, C, dtype=torch.float64),
        "v": torch.randn(A, dtype=torch.float64),
        "bias": torch.randn(A, dtype=torch.float64),
    }
    if w_k:
        p["w_k"] = torch.randn(A, DK, dtype=torch.float64)
    return p


def formula(q, k, f, p) -> np.ndarray:
    """e_ij = wᵀ tanh(W s_{i-1} + V h_j + U f_ij + b), one (b, h, i, j) at a time."""
    W, w, b, U = (p[n].numpy() for n in ("w_q", "v", "bias", "w_f"))
    V = p["w_k"].numpy() if "w_k" in p else None
    e = np.zeros((B, H, LQ, LK))
    for n in range(B):
        for h in range(H):
            for i in range(LQ):
                for j in range(LK):
                    key = k[n, h, j].numpy()
                    vh = V @ key if V is not None else key
                    e[n, h, i, j] = w @ np.tanh(W @ q[n, h, i].numpy() + vh + U @ f[n, 0, i, j].numpy() + b)
    return e


def test_score_matches_the_formula() -> None:
    q = torch.randn(B, H, LQ, DQ, dtype=torch.float64)
    k = torch.randn(B, H, LK, DK, dtype=torch.float64)
    f = torch.randn(B, 1, LQ, LK, C, dtype=torch.float64)
    p = params()
    got = location_aware(q, k, features=f, **p)
    np.testing.assert_allclose(got.numpy(), formula(q, k, f, p), atol=1e-10)


def test_score_with_projected_keys_matches_the_formula() -> None:
    q = torch.randn(B, H, LQ, DQ, dtype=torch.float64)
    k = torch.randn(B, H, LK, A, dtype=torch.float64)  # already V h_j
    f = torch.randn(1, 1, LQ, LK, C, dtype=torch.float64)  # broadcast over the batch
    p = params(w_k=False)
    got = location_aware(q, k, features=f, **p)
    np.testing.assert_allclose(got.numpy(), formula(q, k, f.expand(B, 1, LQ, LK, C), p), atol=1e-10)


def test_attention_normalises_it_with_padding_and_backprops() -> None:
    q = torch.randn(B, H, LQ, DQ, dtype=torch.float64)
    k = torch.randn(B, H, LK, DK, dtype=torch.float64)
    values = torch.randn(B, H, LK, 2, dtype=torch.float64)
    f = torch.randn(B, 1, LQ, LK, C, dtype=torch.float64, requires_grad=True)
    p = params()
    lengths = torch.tensor([LK, 4])
    out, weights = attnkit.attention(
        q, k, values, score=Score("location_aware", features=f, **p),
        mask=attnkit.KeyLengths(lengths), return_weights=True,
    )
    allowed = np.ones((B, H, LQ, LK), dtype=bool)
    allowed[1, ..., 4:] = False
    expected = np_softmax_rows(formula(q, k, f.detach(), p), allowed)
    np.testing.assert_allclose(weights.detach().numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(out.detach().numpy(), expected @ values.numpy(), atol=1e-10)
    assert attnkit.explain_dispatch(q, k, values, score=Score("location_aware", features=f.detach(), **p)).kernel == "reference"
    out.sum().backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_bad_shapes_are_named() -> None:
    q = torch.randn(B, H, LQ, DQ)
    k = torch.randn(B, H, LK, DK)
    p = {n: t.float() for n, t in params().items()}
    with pytest.raises(ValueError, match="features must be"):
        attnkit.attention(q, k, k, score=Score("location_aware", features=torch.randn(B, 1, LQ, LK + 1, C), **p))
    with pytest.raises(ValueError, match="'w_f'"):
        bad = dict(p, w_f=torch.randn(A + 1, C))
        attnkit.attention(q, k, k, score=Score("location_aware", features=torch.randn(B, 1, LQ, LK, C), **bad))
    with pytest.raises(ValueError, match="missing \\['features'\\]"):
        Score("location_aware", **p)
    no_wk = {n: t for n, t in p.items() if n != "w_k"}
    with pytest.raises(ValueError, match="without w_k"):
        attnkit.attention(q, k, k, score=Score("location_aware", features=torch.randn(B, 1, LQ, LK, C), **no_wk))
