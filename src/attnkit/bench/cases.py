"""The benchmark cases: each pairs attnkit with the baseline it must beat, and its target.

Sizes follow issue 4: float32, batch 1, 8 heads, head dim 64 unless a case says otherwise.
``build()`` makes the inputs and returns ``(ours, baseline)``, two functions without
arguments; the baseline is ``None`` when the machine lacks the memory it needs (the naive
one-head case at N = 32768 needs 8 GiB).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

import attnkit
from attnkit.bench.decoder import decoder, generate_cached, generate_full

Fn = Callable[[], object]


@dataclass(frozen=True)
class Target:
    """What a case must reach: ``speedup ≥ min_speedup``, our peak memory ``≤ max_peak_mb``,
    ``baseline peak / our peak ≥ min_memory_ratio`` (``None``: no such target)."""

    min_speedup: float | None = None
    max_peak_mb: float | None = None
    min_memory_ratio: float | None = None

    def describe(self) -> str:
        parts = []
        if self.min_speedup is not None:
            speedup = self.min_speedup
            slower = f" (time ≤ {1 / speedup:.3g}× baseline)" if 0 < speedup < 1 else ""
            parts.append(f"speedup ≥ {speedup:.3g}{slower}")
        if self.max_peak_mb is not None:
            parts.append(f"peak ≤ {self.max_peak_mb:g} MiB")
        if self.min_memory_ratio is not None:
            ratio = self.min_memory_ratio
            parts.append(
                f"peak ≤ {1 / ratio:.3g}× baseline's" if ratio < 1 else f"memory ≥ {ratio:g}× lower"
            )
        return ", ".join(parts)

    def met(self, speedup: float | None, ours_mb: float, base_mb: float | None) -> bool | None:
        """Whether the measured row meets the target (``None`` when it cannot be told)."""
        checks: list[bool | None] = []
        if self.min_speedup is not None:
            checks.append(None if speedup is None else speedup >= self.min_speedup)
        if self.max_peak_mb is not None:
            checks.append(ours_mb <= self.max_peak_mb)
        if self.min_memory_ratio is not None:
            ratio = None if base_mb is None else base_mb / max(ours_mb, 1e-9)
            checks.append(None if ratio is None else ratio >= self.min_memory_ratio)
        if any(c is False for c in checks):
            return False
        return None if not checks or any(c is None for c in checks) else True


@dataclass(frozen=True)
class Case:
    name: str
    baseline: str
    build: Callable[[], tuple[Fn, Fn | None]]
    target: Target
    quick: bool = False  # part of --quick
    repeats: int | None = None  # override the run's repeats (long cases)
    warmup: int | None = None
    # Long single-shot cases: time the one run made under the memory profiler instead of
    # running each side again (the profiler adds nothing measurable to seconds-long calls).
    single_run: bool = False


# ---------------------------------------------------------------------------------------------
# Inputs and baselines.


def _randn(*shape: int, seed: int = 0, grad: bool = False) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).requires_grad_(grad)


def _qkv(n: int, heads: int = 8, dim: int = 64, grad: bool = False) -> tuple[Tensor, ...]:
    return tuple(_randn(1, heads, n, dim, seed=i, grad=grad) for i in range(3))


def naive_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Materialise the scores, softmax, matmul: ``(out, weights)``."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights, v), weights


def naive_additive(q: Tensor, k: Tensor, v: Tensor, w_q: Tensor, w_k: Tensor, vec: Tensor):
    """Bahdanau attention by broadcasting ``tanh(Wq[:, None] + Uk[None])``."""
    qa, ka = q @ w_q.T, k @ w_k.T  # (B, H, L, A)
    scores = torch.tanh(qa.unsqueeze(-2) + ka.unsqueeze(-3)) @ vec  # (B, H, Lq, Lk)
    return torch.softmax(scores, dim=-1) @ v


def _forward_backward(fn: Callable[[], Tensor], inputs: tuple[Tensor, ...], grad: Tensor) -> Fn:
    def step() -> None:
        fn().backward(grad)
        for t in inputs:
            t.grad = None

    return step


def _available_bytes() -> int:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux); a large number elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


# ---------------------------------------------------------------------------------------------
# Builders.


def dense_forward(n: int) -> Callable[[], tuple[Fn, Fn]]:
    def build() -> tuple[Fn, Fn]:
        q, k, v = _qkv(n)
        return lambda: attnkit.attention(q, k, v), lambda: F.scaled_dot_product_attention(q, k, v)

    return build


def dense_forward_backward(n: int) -> Callable[[], tuple[Fn, Fn]]:
    def build() -> tuple[Fn, Fn]:
        q, k, v = _qkv(n, grad=True)
        grad = _randn(1, 8, n, 64, seed=9)
        ours = _forward_backward(lambda: attnkit.attention(q, k, v), (q, k, v), grad)
        base = _forward_backward(lambda: F.scaled_dot_product_attention(q, k, v), (q, k, v), grad)
        return ours, base

    return build


def weights_forward(n: int, against: str) -> Callable[[], tuple[Fn, Fn]]:
    def build() -> tuple[Fn, Fn]:
        q, k, v = _qkv(n)

        def ours() -> object:
            return attnkit.attention(q, k, v, return_weights=True)

        if against == "naive":
            return ours, lambda: naive_attention(q, k, v)
        return ours, lambda: F.scaled_dot_product_attention(q, k, v)

    return build


def banded(n: int, window: tuple[int, int], causal: bool, backward: bool):
    def build() -> tuple[Fn, Fn]:
        q, k, v = _qkv(n, grad=backward)
        left, right = window
        mask = attnkit.masks.window(n, n, left, min(right, 0) if causal else right)  # (N, N)

        def ours() -> Tensor:
            return attnkit.attention(q, k, v, window=window, causal=causal)

        def base() -> Tensor:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

        if not backward:
            return ours, base
        grad = _randn(1, 8, n, 64, seed=9)
        return _forward_backward(ours, (q, k, v), grad), _forward_backward(base, (q, k, v), grad)

    return build


def one_head(n: int, backend: str = "auto"):
    def build() -> tuple[Fn, Fn | None]:
        q, k, v = _qkv(n, heads=1)

        def ours() -> Tensor:
            return attnkit.attention(q, k, v, backend=backend)

        fits = _available_bytes() > 1.5 * (2 * n * n * 4)  # scores + weights, with room
        return ours, (lambda: naive_attention(q, k, v)[0]) if fits else None

    return build


def additive_scores(n: int, width: int = 64):
    def build() -> tuple[Fn, Fn]:
        q, k, v = _qkv(n)
        w_q, w_k = _randn(width, 64, seed=4) / 8, _randn(width, 64, seed=5) / 8
        vec = _randn(width, seed=6)
        score = attnkit.Score("additive", w_q=w_q, w_k=w_k, v=vec)
        return (
            lambda: attnkit.attention(q, k, v, score=score),
            lambda: naive_additive(q, k, v, w_q, w_k, vec),
        )

    return build


def throughput(n: int):
    """attnkit's dense forward against a square float32 matmul of the same FLOP count."""

    def build() -> tuple[Fn, Fn]:
        q, k, v = _qkv(n)
        flops = 4 * n * n * 64 * 8  # two (N × N × D) matmuls per head
        side = round((flops / 2) ** (1 / 3))
        a, b = _randn(side, side, seed=7), _randn(side, side, seed=8)
        return lambda: attnkit.attention(q, k, v), lambda: a @ b

    return build


def kv_cache(steps: int):
    def build() -> tuple[Fn, Fn]:
        torch.manual_seed(0)
        model = decoder(max_len=steps + 8)
        prompt = torch.tensor([[1]])
        return lambda: generate_cached(model, prompt, steps), lambda: generate_full(
            model, prompt, steps
        )

    return build


# ---------------------------------------------------------------------------------------------

SDPA = "torch SDPA"
SDPA_MASK = "torch SDPA + bool band mask"
NAIVE = "naive (materialise, softmax, matmul)"

CASES: list[Case] = [
    Case("dense-fwd-N1024", SDPA, dense_forward(1024), Target(0.95), quick=True),
    Case("dense-fwd-N4096", SDPA, dense_forward(4096), Target(0.95), quick=True),
    Case("dense-fwd-N8192", SDPA, dense_forward(8192), Target(0.95)),
    Case("dense-fwdbwd-N2048", SDPA, dense_forward_backward(2048), Target(0.9), quick=True),
    Case("dense-fwdbwd-N4096", SDPA, dense_forward_backward(4096), Target(0.9)),
    Case("weights-N2048", NAIVE, weights_forward(2048, "naive"), Target(1.5), quick=True),
    Case("weights-N4096", NAIVE, weights_forward(4096, "naive"), Target(1.5)),
    Case(
        "weights-vs-sdpa-N2048", "torch SDPA without weights", weights_forward(2048, "sdpa"),
        Target(1 / 1.3), quick=True,
    ),
    Case(
        "weights-vs-sdpa-N4096", "torch SDPA without weights", weights_forward(4096, "sdpa"),
        Target(1 / 1.3),
    ),
    Case(
        "local-fwd-N4096", SDPA_MASK, banded(4096, (128, 128), False, False), Target(8),
        quick=True,
    ),
    Case(
        "local-fwdbwd-N4096", SDPA_MASK, banded(4096, (128, 128), False, True), Target(8),
        quick=True,
    ),
    Case(
        "local-fwd-N16384", SDPA_MASK, banded(16384, (128, 128), False, False), Target(25),
        repeats=3,
    ),
    Case(
        "local-fwdbwd-N16384", SDPA_MASK, banded(16384, (128, 128), False, True), Target(25),
        repeats=3,
    ),
    Case(
        "sliding-causal-256-N16384", SDPA_MASK, banded(16384, (255, 0), True, False),
        Target(20), repeats=3,
    ),
    Case(
        "one-head-N32768", NAIVE, one_head(32768), Target(max_peak_mb=64), quick=True,
        single_run=True,
    ),
    Case(
        "one-head-chunked-N32768", NAIVE, one_head(32768, "chunked"), Target(max_peak_mb=64),
        single_run=True,
    ),
    Case(
        "additive-N1024", "naive broadcast tanh(Wq[:,None] + Uk[None])", additive_scores(1024),
        Target(2, min_memory_ratio=10), quick=True,
    ),
    Case(
        "kv-cache-T1024", "recompute the full prefix each step", kv_cache(1024), Target(15),
        single_run=True,
    ),
    Case(
        "throughput-N4096", "float32 matmul, same FLOPs", throughput(4096), Target(0.8),
        quick=True,
    ),
]

# Cases kept in their own modules (they import Case and Target from here).
from attnkit.bench import cases_flex  # noqa: E402
from attnkit.bench.cases_cache import CACHE_CASES  # noqa: E402
from attnkit.bench.cases_compile import COMPILE_CASES  # noqa: E402
from attnkit.bench.cases_hf import HF_CASES  # noqa: E402
from attnkit.bench.cases_overhead import OVERHEAD_CASES  # noqa: E402
from attnkit.bench.cases_statistics import STATISTICS_CASES  # noqa: E402

CASES += (
    HF_CASES + CACHE_CASES + STATISTICS_CASES + cases_flex.CASES + COMPILE_CASES + OVERHEAD_CASES
)
