"""Benchmark cases of the attention statistics (``return_weights="key_totals"``,
``"heads_mean"``, ``TopK(k)``): what they cost beside SDPA and beside the full weights.

The statistics are made inside the ``chunked`` kernel (:mod:`attnkit.kernels.summaries`): each
tile of whole rows reduced as it is normalised, the full weights never written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import attnkit
from attnkit.bench.cases import (
    NAIVE,
    SDPA,
    Case,
    Fn,
    Target,
    _available_bytes,
    _qkv,
    naive_attention,
)


def key_totals(n: int, heads: int = 8) -> tuple[Fn, Fn | None]:
    q, k, v = _qkv(n, heads=heads)

    def ours() -> object:
        return attnkit.attention(q, k, v, return_weights="key_totals")

    if heads > 1:
        return ours, lambda: F.scaled_dot_product_attention(q, k, v)

    def naive() -> object:  # the long one-head case: the full weights, then their sums
        out, weights = naive_attention(q, k, v)
        return out, weights.sum(dim=2)

    fits = _available_bytes() > 1.5 * (2 * n * n * 4)  # scores + weights, with room
    return ours, naive if fits else None


def key_totals_with_sinks(n: int) -> tuple[Fn, Fn]:
    """gpt-oss's attention sinks (a logit per head) beside the same call without them: what
    the sinks add to a summary. Each tile of whole rows then needs its rows' log-sum-exp (two
    more reductions over the tile, which the plain summary skips) for its scale
    ``1 − p_sink``, folded into the reduction (for key totals, the product's left side)."""
    q, k, v = _qkv(n)
    sinks = attnkit.Normalizer("softmax_with_sinks", sinks=torch.linspace(-1.0, 1.0, q.shape[1]))

    def ours() -> object:
        return attnkit.attention(q, k, v, return_weights="key_totals", normalize=sinks)

    return ours, lambda: attnkit.attention(q, k, v, return_weights="key_totals")


def heads_mean(n: int) -> tuple[Fn, Fn]:
    q, k, v = _qkv(n)

    def base() -> object:
        out = F.scaled_dot_product_attention(q, k, v)
        return out, torch.zeros(q.shape[0], n, n)  # a fresh (B, Lq, Lk) tensor, written

    return lambda: attnkit.attention(q, k, v, return_weights="heads_mean"), base


def top_k(n: int, k_top: int) -> tuple[Fn, Fn]:
    q, k, v = _qkv(n)

    def base() -> object:
        out, weights = naive_attention(q, k, v)
        return out, weights.topk(k_top, dim=-1)

    return lambda: attnkit.attention(q, k, v, return_weights=attnkit.TopK(k_top)), base


STATISTICS_CASES = [
    Case(
        "stats-key-totals-N4096", f"{SDPA} without weights", lambda: key_totals(4096),
        Target(1 / 1.3, min_memory_ratio=1 / 1.1),
    ),
    Case(
        "stats-key-totals-sinks-N4096", "attnkit's key totals without sinks",
        lambda: key_totals_with_sinks(4096), Target(),  # reported: no issue sets a target
    ),
    Case(
        "stats-heads-mean-N4096", f"{SDPA} + writing a fresh (B, Lq, Lk) tensor",
        lambda: heads_mean(4096), Target(1 / 1.2),
    ),
    Case(
        "stats-topk8-N4096", f"{NAIVE}, then torch.topk", lambda: top_k(4096, 8),
        Target(2, min_memory_ratio=10),
    ),
    Case(
        "stats-key-totals-one-head-N65536", f"{NAIVE}, then the sums",
        lambda: key_totals(65536, heads=1),
        Target(max_peak_mb=64), single_run=True,
    ),
]
