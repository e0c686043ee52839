"""An independent NumPy oracle for attention, written from the contract and the formulas."""

from __future__ import annotations

import numpy as np


def allowed_matrix(
    lq: int,
    lk: int,
    *,
    causal: bool = False,
    window: tuple[int, int] | None = None,
    key_length: int | None = None,
    key_start: int = 0,
) -> np.ndarray:
    """(Lq, Lk) bool from the contract's words, with explicit loops: query i sits at key
    position p = Lk - Lq + i; causal hides j > p; window (l, r) keeps p - l <= j <= p + r;
    key_length hides j >= key_length; key_start hides j < key_start."""
    out = np.ones((lq, lk), dtype=bool)
    for i in range(lq):
        p = lk - lq + i
        for j in range(lk):
            if causal and j > p:
                out[i, j] = False
            if window is not None and not (p - window[0] <= j <= p + window[1]):
                out[i, j] = False
            if key_length is not None and j >= key_length:
                out[i, j] = False
            if j < key_start:
                out[i, j] = False
    return out


def np_softmax_rows(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Row-wise softmax over allowed entries with explicit loops; empty rows are all zero."""
    out = np.zeros_like(scores, dtype=np.float64)
    for idx in np.ndindex(*scores.shape[:-1]):
        row, ok = scores[idx].astype(np.float64), allowed[idx]
        if not ok.any():
            continue
        e = np.exp(np.where(ok, row - row[ok].max(), -np.inf))
        out[idx] = e / e.sum()
    return out


def np_sparsemax_row(z: np.ndarray) -> np.ndarray:
    """Martins & Astudillo 2016, as written: sort, k(z), tau, clip."""
    zs = np.sort(z)[::-1]
    cumulative = np.cumsum(zs)
    k = max(i for i in range(1, len(z) + 1) if 1 + i * zs[i - 1] > cumulative[i - 1])
    tau = (cumulative[k - 1] - 1) / k
    return np.maximum(z - tau, 0.0)
