"""Benchmark cases of generation through a bounded, evicting KV cache: the rate of generation
at several lengths, against the full cache (which attends to every earlier token, so its rate
falls with the length, while a bounded cache's stays flat).

The model is the decoder of :mod:`attnkit.bench.decoder` (width 256, 4 layers, learned
positions). Each case first generates ``T − 256`` tokens greedily with both caches (once,
untimed); each timed call then generates the next 256 tokens from a copy of that state, so
``ours ms / 256`` is the time per token around position ``T`` with every layer's cache bounded
at ``M = 256`` slots (``h2o``, which ranks keys by the attention they received, or
``window``), and the baseline's the same with the full cache.
"""

from __future__ import annotations

import copy

import torch

from attnkit.bench.cases import Case, Fn, Target
from attnkit.bench.decoder import decoder
from attnkit.layers import CachePolicy

SLOTS = 256
TIMED = 256  # tokens generated per timed call


@torch.no_grad()
def generate(model, state, token: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy generation of ``steps`` tokens after ``token (1, 1)``, one model call per token,
    through ``state``'s caches; returns the last token."""
    for _ in range(steps):
        token = model.step(state, token)[:, -1:].argmax(dim=-1)  # (1, 1)
    return token


def rate_at(length: int, policy: str = "h2o") -> tuple[Fn, Fn]:
    """``(ours, baseline)``: the 256 tokens up to position ``length``, from a state made once."""
    torch.manual_seed(0)
    model = decoder(max_len=length + 8)
    starts = {}
    for name, cache in (("ours", CachePolicy(max_len=SLOTS, policy=policy)), ("base", None)):
        state = model.start(1, cache=cache)
        starts[name] = (state, generate(model, state, torch.tensor([[1]]), length - TIMED))

    def timed(name: str) -> Fn:
        def run() -> torch.Tensor:
            state, token = copy.deepcopy(starts[name])
            return generate(model, state, token, TIMED)

        return run

    return timed("ours"), timed("base")


FULL = f"the full KV cache, the same {TIMED} tokens"
CACHE_CASES = [
    Case(f"kv-h2o-M{SLOTS}-at-T{t}", FULL, lambda t=t: rate_at(t), Target(), repeats=3)
    for t in (512, 2048, 4096)
] + [
    Case(
        f"kv-window-M{SLOTS}-at-T4096", FULL, lambda: rate_at(4096, "window"), Target(),
        repeats=3,
    )
]
