"""LocationAwareAttention against Chorowski et al. 2015's equations, with the convolution of the
previous alignment written out as explicit sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnkit.layers.location_aware import LocationAwareAttention
from tests.oracle import np_softmax_rows

B, S, DQ, DK, A, C, K = 2, 9, 5, 4, 6, 3, 5


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def expected(layer: LocationAwareAttention, s_prev, h, alpha_prev, lengths) -> tuple[np.ndarray, np.ndarray]:
    """f_i = F * α_{i-1} (centred, zero outside), e_ij = wᵀ tanh(W s + V h_j + U f_ij + b)."""
    F = np_(layer.F)  # (C, K)
    W, V, U, w, b = (np_(p) for p in (layer.W, layer.V, layer.U, layer.w, layer.b))
    s_prev, h, alpha_prev = np_(s_prev), np_(h), np_(alpha_prev)
    e = np.zeros((B, S))
    for n in range(B):
        for j in range(S):
            f = np.zeros(C)
            for c in range(C):
                for t in range(K):
                    pos = j + t - K // 2
                    if 0 <= pos < S:
                        f[c] += F[c, t] * alpha_prev[n, pos]
            e[n, j] = w @ np.tanh(W @ s_prev[n] + V @ h[n, j] + U @ f + b)
    allowed = np.arange(S)[None, :] < np.asarray(lengths)[:, None]
    weights = np_softmax_rows(e, allowed)
    return weights, np.einsum("bs,bsd->bd", weights, h)


def test_one_step_matches_the_equations() -> None:
    layer = LocationAwareAttention(DQ, DK, A, channels=C, kernel_size=K)
    with torch.no_grad():
        layer.b.normal_()
    s_prev, h = torch.randn(B, DQ), torch.randn(B, S, DK)
    alpha_prev = torch.softmax(torch.randn(B, S), -1)
    lengths = [S, 6]
    context, weights = layer(s_prev, h, alpha_prev, key_lengths=torch.tensor(lengths))
    w_expected, c_expected = expected(layer, s_prev, h, alpha_prev, lengths)
    np.testing.assert_allclose(np_(weights), w_expected, atol=1e-6)
    np.testing.assert_allclose(np_(context), c_expected, atol=1e-5)
    # Projecting the keys once gives the same step.
    again, _ = layer(s_prev, h, alpha_prev, key_lengths=torch.tensor(lengths),
                     projected_keys=layer.project_keys(h))
    torch.testing.assert_close(again, context)


def test_the_previous_alignment_changes_the_weights() -> None:
    layer = LocationAwareAttention(DQ, DK, A, channels=C, kernel_size=K)
    s_prev, h = torch.randn(B, DQ), torch.randn(B, S, DK)
    first = torch.zeros(B, S)
    first[:, 0] = 1.0
    last = torch.zeros(B, S)
    last[:, -1] = 1.0
    _, w_first = layer(s_prev, h, first)
    _, w_last = layer(s_prev, h, last)
    assert not torch.allclose(w_first, w_last)


def test_several_steps_at_once_equal_single_steps_and_gradients_flow() -> None:
    layer = LocationAwareAttention(DQ, DK, A, channels=C, kernel_size=K)
    queries, h = torch.randn(B, 3, DQ), torch.randn(B, S, DK)
    previous = torch.softmax(torch.randn(B, 3, S), -1)
    context, weights = layer(queries, h, previous)
    for t in range(3):
        c_t, w_t = layer(queries[:, t], h, previous[:, t])
        torch.testing.assert_close(c_t, context[:, t])
        torch.testing.assert_close(w_t, weights[:, t])
    context.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_input_is_named() -> None:
    layer = LocationAwareAttention(DQ, DK, A, channels=C, kernel_size=K)
    h = torch.randn(B, S, DK)
    with pytest.raises(ValueError, match="previous"):
        layer(torch.randn(B, DQ), h, torch.rand(B, S + 1))
    with pytest.raises(ValueError, match="query dim"):
        layer(torch.randn(B, DQ + 1), h, torch.rand(B, S))
    with pytest.raises(ValueError, match="key_lengths"):
        layer(torch.randn(B, DQ), h, torch.rand(B, S), key_lengths=torch.tensor([1]))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        LocationAwareAttention(DQ, DK, kernel_size=4)
