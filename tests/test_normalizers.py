"""Normalizers against their published definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnkit import normalizers
from tests.oracle import np_softmax_rows, np_sparsemax_row


def test_sparsemax_worked_example() -> None:
    # z = (1, 0.5, -1): k(z) = 2, tau = (1.5 - 1) / 2 = 0.25, p = (0.75, 0.25, 0)
    p = normalizers.sparsemax(torch.tensor([[1.0, 0.5, -1.0]]))
    torch.testing.assert_close(p, torch.tensor([[0.75, 0.25, 0.0]]))


def test_sparsemax_matches_formula_and_lies_on_the_simplex() -> None:
    z = torch.randn(50, 9, dtype=torch.float64) * 2
    p = normalizers.sparsemax(z)
    want = np.stack([np_sparsemax_row(row) for row in z.numpy()])
    np.testing.assert_allclose(p.numpy(), want, atol=1e-12)
    assert torch.all(p >= 0)
    torch.testing.assert_close(p.sum(-1), torch.ones(50, dtype=torch.float64))
    assert (p == 0).any()  # sparse, unlike softmax


@pytest.mark.parametrize("fn", [normalizers.softmax, normalizers.sparsemax, normalizers.hardmax])
def test_empty_rows_are_zero(fn) -> None:
    s = torch.randn(3, 4)
    allowed = torch.tensor([[True, False, True, True], [False] * 4, [True] * 4])
    w = fn(s, allowed)
    assert torch.all(w[1] == 0) and torch.all(w[0, 1] == 0) and torch.isfinite(w).all()


def test_softmax_matches_formula_with_masks_and_extreme_logits() -> None:
    s = torch.randn(4, 6, dtype=torch.float64) * 1e4
    allowed = torch.rand(4, 6) > 0.3
    allowed[:, 0] = True
    np.testing.assert_allclose(
        normalizers.softmax(s, allowed).numpy(),
        np_softmax_rows(s.numpy(), allowed.numpy()),
        atol=1e-12,
    )


def test_hardmax_is_one_hot_at_argmax_of_allowed() -> None:
    s = torch.tensor([[3.0, 1.0, 2.0]])
    torch.testing.assert_close(normalizers.hardmax(s), torch.tensor([[1.0, 0.0, 0.0]]))
    allowed = torch.tensor([[False, True, True]])
    torch.testing.assert_close(normalizers.hardmax(s, allowed), torch.tensor([[0.0, 0.0, 1.0]]))


def test_multinoulli_samples_follow_softmax() -> None:
    s = torch.tensor([1.0, 0.0, -1.0, 2.0]).expand(20000, 4)
    generator = torch.Generator().manual_seed(0)
    samples = normalizers.multinoulli(s, generator=generator)
    assert torch.all(samples.sum(-1) == 1)
    frequencies = samples.mean(0).numpy()
    probabilities = np.exp([1.0, 0.0, -1.0, 2.0]) / np.exp([1.0, 0.0, -1.0, 2.0]).sum()
    np.testing.assert_allclose(frequencies, probabilities, atol=0.015)


def test_local_p_is_softmax_times_gaussian() -> None:
    s = torch.randn(2, 3, 10, dtype=torch.float64)
    centers = torch.rand(2, 3, dtype=torch.float64) * 9
    allowed = (torch.arange(10) - centers.unsqueeze(-1)).abs() <= 2
    w = normalizers.local_p(s, allowed, centers=centers, sigma=1.0)
    soft = np_softmax_rows(s.numpy(), allowed.numpy())
    j = np.arange(10)
    want = soft * np.exp(-((j - centers.numpy()[..., None]) ** 2) / (2 * 1.0**2))
    np.testing.assert_allclose(w.numpy(), want, atol=1e-12)


def test_normalizer_spec_errors() -> None:
    with pytest.raises(ValueError, match=r"tau must be > 0, got 0"):
        normalizers.Normalizer("gumbel_softmax", tau=0)
    with pytest.raises(ValueError, match=r"missing \['sigma'\]"):
        normalizers.Normalizer("local_p", centers=torch.zeros(1))


def _np_sink_softmax(s: np.ndarray, allowed: np.ndarray, sinks: np.ndarray) -> np.ndarray:
    """gpt-oss's published form (transformers' eager attention for gpt-oss): the sink logit
    as one more column, a plain softmax over keys and sink, the sink's column dropped."""
    hidden = np.where(allowed, s, -np.inf)
    column = np.broadcast_to(sinks[:, None, None], (*s.shape[:-1], 1))
    both = np.concatenate([hidden, column], axis=-1)  # (H, L, S + 1)
    both = np.exp(both - both.max(axis=-1, keepdims=True))
    return (both / both.sum(axis=-1, keepdims=True))[..., :-1]


def test_softmax_with_sinks_is_the_extra_column_softmax_with_masks_and_empty_rows() -> None:
    s = torch.randn(3, 5, 7, dtype=torch.float64) * 3  # (H, L, S)
    allowed = torch.rand(3, 5, 7) > 0.4
    allowed[0, 2] = False  # a row with nothing to see: weights 0, the sink takes it all
    sinks = torch.tensor([-1.0, 0.5, 40.0], dtype=torch.float64)  # one per head, one huge
    w = normalizers.softmax_with_sinks(s, allowed, sinks=sinks)
    want = _np_sink_softmax(s.numpy(), allowed.numpy(), sinks.numpy())
    np.testing.assert_allclose(w.numpy(), want, atol=1e-12)
    assert torch.all(w[0, 2] == 0) and torch.isfinite(w).all()
    assert torch.all(w.sum(-1) < 1)  # the sink keeps a share of every row


def test_softmax_with_sinks_limits() -> None:
    s = torch.randn(2, 4, 6, dtype=torch.float64)
    # σ = 0: Miller's softmax₁, exp(s_j) / (1 + Σ exp(s_j))
    one = normalizers.softmax_with_sinks(s, None, sinks=torch.zeros(2, dtype=torch.float64))
    np.testing.assert_allclose(
        one.numpy(), np.exp(s.numpy()) / (1 + np.exp(s.numpy()).sum(-1, keepdims=True)),
        atol=1e-12,
    )
    # σ = −inf: the sink takes nothing, plain softmax
    none = normalizers.softmax_with_sinks(s, None, sinks=torch.full((2,), -torch.inf,
                                                                     dtype=torch.float64))
    np.testing.assert_allclose(
        none.numpy(), np_softmax_rows(s.numpy(), np.ones(s.shape, dtype=bool)), atol=1e-12
    )


def test_softmax_with_sinks_refuses_bad_sinks_by_name() -> None:
    s = torch.randn(1, 4, 3, 5)  # (B, Hq, Lq, Lk)
    with pytest.raises(ValueError, match=r"sinks of shape \(3,\) do not broadcast.*\(4,\)"):
        normalizers.softmax_with_sinks(s, None, sinks=torch.zeros(3))
    with pytest.raises(TypeError, match=r"sinks must be a float tensor, got torch\.int64"):
        normalizers.softmax_with_sinks(s, None, sinks=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"missing \['sinks'\]"):
        normalizers.Normalizer("softmax_with_sinks")
