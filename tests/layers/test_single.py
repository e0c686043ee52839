"""Additive, Luong (global, local-m, local-p) and hard attention against the published formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnkit.layers import AdditiveAttention, HardAttention, LuongAttention
from tests.oracle import np_softmax_rows

B, T, S, D = 2, 3, 9, 6


def states():
    return torch.randn(B, T, D), torch.randn(B, S, D), torch.randn(B, S, 4)


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def context(weights: np.ndarray, values: torch.Tensor) -> np.ndarray:
    return np.einsum("bts,bsd->btd", weights, np_(values))


def test_additive_is_bahdanau() -> None:
    layer = AdditiveAttention(D, D, hidden_dim=5)
    s, h, _ = states()
    got_c, got_w = layer(s, h, key_lengths=torch.tensor([S, 6]))
    W, U, v = np_(layer.scorer.W), np_(layer.scorer.U), np_(layer.scorer.v)
    e = np.einsum(
        "a,btsa->bts",
        v,
        np.tanh(
            np.einsum("ad,btd->bta", W, np_(s))[:, :, None]
            + np.einsum("ad,bsd->bsa", U, np_(h))[:, None]
        ),
    )  # e_tj = vᵀ tanh(W s_t + U h_j)
    allowed = np.ones((B, T, S), dtype=bool)
    allowed[1, :, 6:] = False
    w = np_softmax_rows(e, allowed)
    np.testing.assert_allclose(np_(got_w), w, atol=1e-6)
    np.testing.assert_allclose(np_(got_c), context(w, h), atol=1e-5)


@pytest.mark.parametrize("score", ["dot", "general", "concat", "location"])
def test_luong_global_scores(score: str) -> None:
    layer = LuongAttention(D, score=score, max_keys=12)
    h_t, h_s, values = states()
    got_c, got_w = layer(h_t, h_s, values)
    q, k = np_(h_t), np_(h_s)
    if score == "dot":
        e = np.einsum("btd,bsd->bts", q, k)
    elif score == "general":
        e = np.einsum("btd,de,bse->bts", q, np_(layer.scorer.weight), k)
    elif score == "concat":
        W, v = np_(layer.scorer.W), np_(layer.scorer.v)
        e = np.zeros((B, T, S))
        for b in range(B):
            for t in range(T):
                for j in range(S):
                    e[b, t, j] = v @ np.tanh(W @ np.concatenate([q[b, t], k[b, j]]))
    else:  # location: a_t = softmax(W_a h_t), one row of W_a per source position
        e = np.einsum("sd,btd->bts", np_(layer.scorer.W)[:S], q)
    w = np_softmax_rows(e, np.ones_like(e, dtype=bool))
    np.testing.assert_allclose(np_(got_w), w, atol=1e-6)
    np.testing.assert_allclose(np_(got_c), context(w, values), atol=1e-5)


def test_luong_local_m_attends_to_the_window_around_t() -> None:
    layer = LuongAttention(D, score="dot", mode="local-m", window=1)
    h_t, h_s, _ = states()
    _, w = layer(h_t, h_s)
    e = np.einsum("btd,bsd->bts", np_(h_t), np_(h_s))
    allowed = np.zeros((B, T, S), dtype=bool)
    for t in range(T):
        allowed[:, t, max(0, t - 1) : t + 2] = True  # [p_t - D, p_t + D], p_t = t
    np.testing.assert_allclose(np_(w), np_softmax_rows(e, allowed), atol=1e-6)
    # one decoding step at t = 2 gives row 2
    _, w_step = layer(h_t[:, 2], h_s, positions=2)
    np.testing.assert_allclose(np_(w_step), np_(w[:, 2]), atol=1e-6)


def test_luong_local_p_follows_the_published_formula() -> None:
    window = 2
    layer = LuongAttention(D, score="general", mode="local-p", window=window)
    h_t, h_s, _ = states()
    lengths = torch.tensor([S, 7])
    _, w = layer(h_t, h_s, key_lengths=lengths)
    Wp, vp = np_(layer.position_proj.weight), np_(layer.position_v.weight)[0]
    p_t = np_(lengths)[:, None] / (1 + np.exp(-(np.tanh(np_(h_t) @ Wp.T) @ vp)))  # S·sigmoid(...)
    e = np.einsum("btd,de,bse->bts", np_(h_t), np_(layer.scorer.weight), np_(h_s))
    j = np.arange(S)
    in_window = np.abs(j[None, None] - p_t[..., None]) <= window
    in_window &= j[None, None] < np_(lengths)[:, None, None]
    align = np_softmax_rows(e, in_window)
    sigma = window / 2
    want = align * np.exp(-((j[None, None] - p_t[..., None]) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(np_(w), want, atol=1e-6)


def test_hard_attention_is_argmax_at_inference_and_samples_in_training() -> None:
    layer = HardAttention(D, D, score="additive")
    s, h, _ = states()
    layer.eval()
    c, w = layer(s, h)
    probs = layer.probabilities(s, h)
    torch.testing.assert_close(w, torch.nn.functional.one_hot(probs.argmax(-1), S).float())
    torch.testing.assert_close(c, torch.einsum("bts,bsd->btd", w, h))
    layer.train()
    draws = torch.stack([layer(s, h)[1] for _ in range(400)])  # (400, B, T, S)
    assert torch.all(draws.sum(-1) == 1)
    torch.testing.assert_close(draws.mean(0), probs.detach(), atol=0.08, rtol=0)
    layer.reinforce_loss(torch.zeros(B))  # clears the stored samples


def marker_task(batch: int = 32):
    """Five keys per example, one of them the marker m: find it (chance = 20 %)."""
    torch.manual_seed(1)
    marker = torch.randn(D)

    def sample():
        keys = torch.randn(batch, 5, D)
        where = torch.randint(0, 5, (batch,))
        keys[torch.arange(batch), where] = marker
        return keys, where

    return marker, sample


@pytest.mark.parametrize("estimator", ["reinforce", "gumbel"])
def test_hard_attention_learns_to_find_the_marker(estimator: str) -> None:
    _, sample = marker_task()
    layer = HardAttention(D, D, score="additive", hidden_dim=16, estimator=estimator, tau=0.5)
    query = torch.ones(32, D)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)

    def accuracy() -> float:
        layer.eval()
        keys, where = sample()
        _, w = layer(query, keys)
        layer.train()
        return float((w.argmax(-1) == where).float().mean())

    before = accuracy()
    for _ in range(150):
        keys, where = sample()
        found = torch.nn.functional.one_hot(where, 5).float().unsqueeze(-1)  # (B, 5, 1) values
        c, _ = layer(query, keys, found)
        # REINFORCE: reward 1 when the marker was picked; straight-through: raise its probability
        loss = layer.reinforce_loss(c.squeeze(-1)) if estimator == "reinforce" else -c.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = accuracy()
    assert after > 0.9 and after > before, (before, after)


def test_layer_errors() -> None:
    with pytest.raises(ValueError, match=r"mode must be one of"):
        LuongAttention(D, mode="local")
    with pytest.raises(ValueError, match=r"needs window=D"):
        LuongAttention(D, mode="local-p")
    with pytest.raises(ValueError, match=r"score 'dot' needs query_dim == key_dim, got 6 and 4"):
        LuongAttention(D, 4, score="dot")
    with pytest.raises(ValueError, match=r"local-m on a single step needs positions"):
        LuongAttention(D, mode="local-m", window=2)(torch.randn(B, D), torch.randn(B, S, D))
    layer = AdditiveAttention(D, D)
    with pytest.raises(ValueError, match=r"keys \(2, 9, 6\), values \(3, 9, 6\)"):
        layer(torch.randn(B, D), torch.randn(B, S, D), torch.randn(3, S, D))
    with pytest.raises(ValueError, match=r"mask must be bool \(B, S\)"):
        layer(torch.randn(B, D), torch.randn(B, S, D), mask=torch.ones(B, S))
    with pytest.raises(ValueError, match=r"estimator must be one of"):
        HardAttention(D, D, estimator="vimco")
    with pytest.raises(ValueError, match=r"no sampled positions"):
        HardAttention(D, D).reinforce_loss(torch.zeros(B))
    with torch.no_grad():
        assert math.isfinite(float(layer(torch.randn(B, D), torch.randn(B, S, D))[0].sum()))
