"""Benchmark cases of generation through a bounded, evicting KV cache: tokens per second at
several lengths, against the full cache (which attends to every earlier token, so its rate
falls with the length while the bounded cache's stays flat).

The model is the decoder of :mod:`attnkit.bench.decoder` (width 256, 4 layers, learned
positions); ``ours`` generates ``T`` tokens greedily with every layer's cache bounded at
``M = 256`` slots under H2O (the dearest policy: it asks each step's attention for the key
totals and ranks the keys), the baseline the same ``T`` tokens with the full cache. Tokens per
second = ``T / ms × 1000`` of each side.
"""

from __future__ import annotations

import torch

from attnkit.bench.cases import Case, Fn, Target
from attnkit.bench.decoder import decoder
from attnkit.layers import CachePolicy

SLOTS = 256


@torch.no_grad()
def generate(model, steps: int, cache: CachePolicy | None) -> torch.Tensor:
    """Greedy generation of ``steps`` tokens after ``<bos>``, one model call per token."""
    state = model.start(1, cache=cache)
    token = torch.tensor([[1]])
    for _ in range(steps):
        token = model.step(state, token)[:, -1:].argmax(dim=-1)  # (1, 1)
    return token


def bounded_generation(steps: int, policy: str = "h2o") -> tuple[Fn, Fn]:
    torch.manual_seed(0)
    model = decoder(max_len=steps + 8)
    bounded = CachePolicy(max_len=SLOTS, policy=policy)
    return lambda: generate(model, steps, bounded), lambda: generate(model, steps, None)


FULL = "the full (unbounded) KV cache"
CACHE_CASES = [
    Case(f"kv-h2o-M{SLOTS}-T512", FULL, lambda: bounded_generation(512), Target(), repeats=3),
    Case(f"kv-h2o-M{SLOTS}-T2048", FULL, lambda: bounded_generation(2048), Target(), repeats=3),
    Case(
        f"kv-h2o-M{SLOTS}-T4096", FULL, lambda: bounded_generation(4096), Target(1.0),
        single_run=True,
    ),
]
