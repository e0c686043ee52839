"""Benchmark cases of the cost of deciding what to run: small calls where attnkit does exactly
what a bare PyTorch call does, so every microsecond of validation and dispatch shows.

float32, batch 1, 8 heads, head dim 64. Each timed sample is a loop of ``CALLS`` calls, so
the ``ms`` columns read as **µs per call**; the runner reports the median of the samples.

- ``overhead-L1``, ``overhead-L16``: self-attention of 1 and 16 tokens against SDPA.
- ``overhead-decode-causal-S512``: one decoding step, 1 query against 512 cached keys with
  ``causal=True`` (bottom-right: the query sees every key) against SDPA without a mask.
- ``overhead-mha-E512-L16``: :class:`attnkit.MultiHeadAttention` against
  ``torch.nn.MultiheadAttention`` with the same weights, both with their defaults
  (``batch_first=False``), evaluation mode, no gradient, ``need_weights=False``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

import attnkit
from attnkit.bench.cases import SDPA, Case, Fn, Target, _qkv, _randn

CALLS = 1000


def _loop(fn: Callable[[], object]) -> Fn:
    """``fn`` called ``CALLS`` times: one timed sample."""

    def run() -> None:
        for _ in range(CALLS):
            fn()

    return run


def self_attention(n: int) -> tuple[Fn, Fn]:
    q, k, v = _qkv(n)
    return (
        _loop(lambda: attnkit.attention(q, k, v)),
        _loop(lambda: F.scaled_dot_product_attention(q, k, v)),
    )


def decode_step(cached: int) -> tuple[Fn, Fn]:
    q = _randn(1, 8, 1, 64, seed=0)
    k, v = _randn(1, 8, cached, 64, seed=1), _randn(1, 8, cached, 64, seed=2)
    return (
        _loop(lambda: attnkit.attention(q, k, v, causal=True)),
        _loop(lambda: F.scaled_dot_product_attention(q, k, v)),
    )


def multihead(embed: int, n: int) -> tuple[Fn, Fn]:
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(embed, 8).eval()
    ours = attnkit.MultiHeadAttention.from_torch(theirs).eval()
    x = _randn(n, 1, embed, seed=3)  # (L, B, E): both modules' default layout

    def call(module: torch.nn.Module) -> Fn:
        def run() -> None:
            with torch.no_grad():
                for _ in range(CALLS):
                    module(x, x, x, need_weights=False)

        return run

    return call(ours), call(theirs)


MHA = "torch.nn.MultiheadAttention (batch_first=False, eval, no grad)"
OVERHEAD_CASES = [
    Case("overhead-L1", SDPA, lambda: self_attention(1), Target(1 / 1.3), quick=True),
    Case("overhead-L16", SDPA, lambda: self_attention(16), Target(1 / 1.2), quick=True),
    Case(
        "overhead-decode-causal-S512", f"{SDPA} without a mask", lambda: decode_step(512),
        Target(1 / 1.15), quick=True,
    ),
    Case("overhead-mha-E512-L16", MHA, lambda: multihead(512, 16), Target(1 / 1.1), quick=True),
]
