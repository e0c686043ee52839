"""The `reference` kernel against formulas written independently here in NumPy (loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import attnkit
from attnkit import Normalizer, Score
from tests.oracle import allowed_matrix, np_softmax_rows, np_sparsemax_row

B, HQ, HKV, LQ, LK, D = 2, 4, 2, 5, 7, 6


def np_score(name: str, q: np.ndarray, k: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """score(q_i, k_j) for one head, q (Lq, Dq), k (Lk, Dk), from FORMULAS.md."""
    lq, lk = q.shape[0], k.shape[0]
    s = np.zeros((lq, lk))
    for i in range(lq):
        for j in range(lk):
            qi, kj = q[i], k[j]
            if name == "dot":
                s[i, j] = qi @ kj
            elif name == "scaled_dot":
                s[i, j] = qi @ kj / math.sqrt(q.shape[1])
            elif name == "general":
                s[i, j] = qi @ p["weight"] @ kj
            elif name == "additive":
                s[i, j] = p["v"] @ np.tanh(p["w_q"] @ qi + p["w_k"] @ kj)
            elif name == "concat":
                s[i, j] = p["v"] @ np.tanh(p["weight"] @ np.concatenate([qi, kj]))
            elif name == "cosine":
                s[i, j] = qi @ kj / (np.linalg.norm(qi) * np.linalg.norm(kj))
            elif name == "location":
                s[i, j] = p["weight"][j] @ qi
    return s


def make_score(name: str, dq: int, dk: int) -> tuple[str | Score, dict[str, np.ndarray]]:
    a = 3
    raw = {
        "general": {"weight": torch.randn(dq, dk)},
        "additive": {"w_q": torch.randn(a, dq), "w_k": torch.randn(a, dk), "v": torch.randn(a)},
        "concat": {"weight": torch.randn(a, dq + dk), "v": torch.randn(a)},
        "location": {"weight": torch.randn(LK + 2, dq)},
    }.get(name, {})
    spec = Score(name, **raw) if raw else name
    return spec, {key: value.double().numpy() for key, value in raw.items()}


def run_reference(q, k, v, **kw):
    return attnkit.attention(q, k, v, backend="reference", return_weights=True, **kw)


def expected(q, k, v, score_name, params, allowed, normalizer="softmax"):
    qn, kn, vn = (t.double().numpy() for t in (q, k, v))
    group = q.shape[1] // k.shape[1]
    out = np.zeros((q.shape[0], q.shape[1], q.shape[2], v.shape[3]))
    weights = np.zeros((q.shape[0], q.shape[1], q.shape[2], k.shape[2]))
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            s = np_score(score_name, qn[b, h], kn[b, h // group], params)
            ok = allowed[b] if allowed.ndim == 3 else allowed
            if normalizer == "softmax":
                w = np_softmax_rows(s, ok)
            else:
                w = np.zeros_like(s)
                for i in range(s.shape[0]):
                    if ok[i].any():
                        w[i, ok[i]] = np_sparsemax_row(s[i, ok[i]])
            weights[b, h] = w
            out[b, h] = w @ vn[b, h // group]
    return out, weights


SCORES = ["dot", "scaled_dot", "general", "additive", "concat", "cosine", "location"]
MASKS = ["none", "causal", "window", "padding", "causal+window+padding"]


def mask_kwargs(kind: str, lq: int, lk: int) -> tuple[dict, np.ndarray]:
    lengths = [lk, max(1, lk - 3)]
    causal = "causal" in kind
    window = (2, 1) if "window" in kind else None
    padded = "padding" in kind
    allowed = np.stack(
        [
            allowed_matrix(
                lq, lk, causal=causal, window=window, key_length=lengths[b] if padded else None
            )
            for b in range(B)
        ]
    )
    kwargs: dict = {"causal": causal, "window": window}
    if padded:
        kwargs["mask"] = attnkit.KeyLengths(torch.tensor(lengths))
    return kwargs, allowed


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("kind", MASKS)
def test_reference_matches_formulas(score: str, kind: str) -> None:
    dq, dk = (D, D) if score in ("dot", "scaled_dot", "cosine") else (D, D + 2)
    q, k, v = torch.randn(B, HQ, LQ, dq), torch.randn(B, HKV, LK, dk), torch.randn(B, HKV, LK, 3)
    spec, params = make_score(score, dq, dk)
    kwargs, allowed = mask_kwargs(kind, LQ, LK)
    out, weights = run_reference(q, k, v, score=spec, **kwargs)
    want_out, want_w = expected(q, k, v, score, params, allowed)
    np.testing.assert_allclose(weights.numpy(), want_w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.numpy(), want_out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", MASKS)
def test_reference_sparsemax_matches_formula(kind: str) -> None:
    q, k, v = torch.randn(B, HQ, LQ, D), torch.randn(B, HKV, LK, D), torch.randn(B, HKV, LK, 3)
    kwargs, allowed = mask_kwargs(kind, LQ, LK)
    out, weights = run_reference(q, k, v, score="dot", normalize="sparsemax", **kwargs)
    want_out, want_w = expected(q, k, v, "dot", {}, allowed, normalizer="sparsemax")
    np.testing.assert_allclose(weights.numpy(), want_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.numpy(), want_out, rtol=1e-5, atol=1e-5)


def test_user_bool_mask_with_empty_rows_gives_zero_output() -> None:
    q, k, v = torch.randn(1, 2, 4, D), torch.randn(1, 2, 6, D), torch.randn(1, 2, 6, 3)
    allowed = torch.rand(1, 2, 4, 6) > 0.4
    allowed[0, 1, 2] = False  # a query that may see nothing
    out, weights = run_reference(q, k, v, mask=allowed)
    for h in range(2):
        s = q[0, h].double().numpy() @ k[0, h].double().numpy().T / math.sqrt(D)
        w = np_softmax_rows(s, allowed[0, h].numpy())
        np.testing.assert_allclose(weights[0, h].numpy(), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[0, h].numpy(), w @ v[0, h].double().numpy(), atol=1e-5)
    assert torch.all(out[0, 1, 2] == 0) and torch.all(weights[0, 1, 2] == 0)


def test_float_bias_is_added_to_scores() -> None:
    q, k, v = torch.randn(1, 1, 3, D), torch.randn(1, 1, 4, D), torch.randn(1, 1, 4, 2)
    bias = torch.randn(3, 4)
    bias[1] = float("-inf")  # a row with nothing allowed
    out, weights = run_reference(q, k, v, mask=bias)
    s = q[0, 0].double().numpy() @ k[0, 0].double().numpy().T / math.sqrt(D) + bias.double().numpy()
    w = np_softmax_rows(np.where(np.isfinite(s), s, 0.0), np.isfinite(s))
    np.testing.assert_allclose(weights[0, 0].numpy(), w, rtol=1e-5, atol=1e-6)
    assert torch.all(out[0, 0, 1] == 0)


@pytest.mark.parametrize("lq,lk", [(2, 5), (5, 2), (4, 4), (1, 6)])
def test_causal_is_bottom_right_aligned(lq: int, lk: int) -> None:
    q, k, v = torch.randn(1, 1, lq, D), torch.randn(1, 1, lk, D), torch.randn(1, 1, lk, 2)
    _, weights = run_reference(q, k, v, causal=True)
    visible = (weights[0, 0] > 0).numpy()
    for i in range(lq):
        for j in range(lk):
            assert visible[i, j] == (j <= lk - lq + i), (i, j)


def test_hardmax_and_local_p_normalizers() -> None:
    q, k, v = torch.randn(1, 1, 3, D), torch.randn(1, 1, 8, D), torch.randn(1, 1, 8, 2)
    _, w = run_reference(q, k, v, score="dot", normalize="hardmax")
    s = (q[0, 0] @ k[0, 0].T).numpy()
    np.testing.assert_array_equal(w[0, 0].numpy(), np.eye(8)[s.argmax(-1)])
    centers = torch.tensor([[[1.5, 4.0, 6.2]]])
    _, w = run_reference(
        q, k, v, score="dot", normalize=Normalizer("local_p", centers=centers, sigma=1.0)
    )
    soft = np_softmax_rows(s.astype(np.float64), np.ones_like(s, dtype=bool))
    gauss = np.exp(-((np.arange(8)[None] - centers[0, 0].numpy()[:, None]) ** 2) / 2.0)
    np.testing.assert_allclose(w[0, 0].numpy(), soft * gauss, rtol=1e-5, atol=1e-7)


def test_float64_stays_float64_and_bf16_is_computed_in_float32() -> None:
    q, k, v = (torch.randn(1, 2, 5, D, dtype=torch.float64) for _ in range(3))
    out = attnkit.attention(q, k, v, backend="reference")
    assert out.dtype == torch.float64
    qb, kb, vb = (t.to(torch.bfloat16) for t in (q, k, v))
    out_b = attnkit.attention(qb, kb, vb, backend="reference")
    assert out_b.dtype == torch.bfloat16
    exact = attnkit.attention(qb.double(), kb.double(), vb.double(), backend="reference")
    # only the final rounding to bf16 separates them: |error| <= one bf16 ulp of the value
    assert torch.all((out_b.double() - exact).abs() <= exact.abs() * 2**-8 + 1e-6)
