"""Timing and memory measurement for the benchmark cases.

Time: :func:`time_interleaved` runs the functions of one case in one process, one warm-up call
each, then ``repeats`` rounds in which every function runs once, the order alternating from
round to round (ABBA), so a machine that slows down or speeds up over the run affects both
sides alike. The result per function is the list of wall-clock times; the median is reported.

Memory: :func:`peak_bytes` measures the peak bytes of CPU tensor memory allocated *beyond what
is live when it starts* (the inputs). It runs the function once under ``torch.profiler`` with
``profile_memory=True``: c10's CPU allocator then reports every tensor allocation and free
(with its size) to the profiler as a ``[memory]`` event. The running sum of those sizes, in
time order, is the number of bytes allocated since the start and still live; its maximum is
the peak. This counts every tensor PyTorch allocates, in the operators' C++ too (SDPA's
buffers, autograd's saved tensors), but not memory that libraries such as oneDNN or MKL take
with their own ``malloc``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator

from torch.profiler import ProfilerActivity, profile


def time_interleaved(
    fns: dict[str, Callable[[], object]], *, warmup: int = 1, repeats: int = 5
) -> dict[str, list[float]]:
    """Milliseconds per call of each function, measured interleaved (see the module docstring).

    Raises:
        ValueError: ``repeats < 1`` or ``warmup < 0``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    enabled = gc.isenabled()
    try:
        for round_ in range(repeats):
            gc.collect()
            gc.disable()  # no collection pauses inside a timed call
            for name in names if round_ % 2 == 0 else reversed(names):
                start = time.perf_counter()
                fns[name]()
                times[name].append((time.perf_counter() - start) * 1e3)
            if enabled:
                gc.enable()
    finally:
        if enabled:
            gc.enable()
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> float:
    """``(max − min) / median``: how noisy the repeats were."""
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid > 0 else 0.0


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak CPU tensor bytes allocated by ``fn()`` beyond what was live before it ran."""
    return timed_peak_bytes(fn)[0]


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to the null device: the profiler's C++ side prints a
    ``profiler_start``/``profiler_stop`` line on every use. Python exceptions still propagate
    (their tracebacks print after the descriptor is restored)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def timed_peak_bytes(fn: Callable[[], object]) -> tuple[int, float]:
    """``(peak bytes, milliseconds)`` of one call of ``fn`` under the memory profiler."""
    gc.collect()
    with (
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        start = time.perf_counter()
        result = fn()
        elapsed = (time.perf_counter() - start) * 1e3
        del result
    events = [
        e
        for e in prof.profiler.kineto_results.events()  # type: ignore[union-attr]
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    ]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak, elapsed
