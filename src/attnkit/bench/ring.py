"""The ``ring`` benchmark case: ring attention on P processes against one process holding the
whole sequence.

:func:`ring_rows` launches itself under torchrun (``python -m torch.distributed.run
--standalone --nproc-per-node P -m attnkit.bench.ring --worker ...``); every rank holds
``N/P`` positions (zig-zag layout, causal), times :func:`attnkit.distributed.ring_attention`
forward and forward+backward (median of ``repeats``, one thread per rank) and measures its
peak memory; rank 0 writes every rank's numbers to a JSON file. The parent process then runs
the baseline, :func:`attnkit.attention` on the whole sequence with P threads (the same cores),
and returns one row per mode in the format of :mod:`attnkit.bench.runner`.

Memory is reported two ways: *beyond the inputs* (the runner's measure: peak bytes allocated
during the call) and *total* (that plus the inputs the process holds: ``q, k, v`` and, for the
backward, ``dout``). The target of the issue is on the total: a rank must need at most
``1/P + 10 %`` of what one process holding the whole sequence needs.

Run it directly: ``python -m attnkit.bench.ring --nproc 2 --length 8192``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from attnkit._validate import check_positive_ints
from attnkit.bench.cases import _forward_backward
from attnkit.bench.measure import median, peak_bytes, spread, time_interleaved

MIB = 1 << 20
MODES = ("fwd", "fwdbwd")


def _inputs(n: int, heads: int, dim: int, grad: bool, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(1, heads, n, dim, generator=gen) for _ in range(4))
    return (*(t.requires_grad_(grad) for t in (q, k, v)), dout)


def _calls(attend: Callable[..., torch.Tensor], n: int, heads: int, dim: int, seed: int
           ) -> dict[str, tuple[Callable[[], object], int]]:
    """``mode -> (function, bytes of the inputs it holds)``."""
    q, k, v, _ = _inputs(n, heads, dim, False, seed)
    qg, kg, vg, dout = _inputs(n, heads, dim, True, seed)
    one = q.numel() * q.element_size()

    def fwd() -> object:
        with torch.no_grad():
            return attend(q, k, v)

    fwdbwd = _forward_backward(lambda: attend(qg, kg, vg), (qg, kg, vg), dout)
    return {"fwd": (fwd, 3 * one), "fwdbwd": (fwdbwd, 4 * one)}


def _measure(calls: dict[str, tuple[Callable[[], object], int]], repeats: int
             ) -> dict[str, dict[str, float]]:
    out = {}
    for mode, (fn, held) in calls.items():
        times = time_interleaved({mode: fn}, warmup=1, repeats=repeats)[mode]
        peak = peak_bytes(fn)
        out[mode] = {
            "ms": median(times), "spread": spread(times), "peak_mb": peak / MIB,
            "inputs_mb": held / MIB, "total_mb": (peak + held) / MIB,
        }
    return out


# ---------------------------------------------------------------------------------------------
# Worker (one rank, under torchrun)


def _worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from attnkit.distributed import ring_attention

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=600))
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        local = args.length // world

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return ring_attention(q, k, v, causal=True, layout="zigzag",
                                  kv_chunks=args.kv_chunks, chunk=args.chunk)

        measured = _measure(_calls(attend, local, args.heads, args.dim, seed=rank), args.repeats)
        table: list[Any] = [None] * world
        dist.all_gather_object(table, measured)
        if rank == 0:
            tmp = Path(args.out + ".tmp")
            tmp.write_text(json.dumps(table))
            os.replace(tmp, args.out)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Parent


def ring_rows(
    *, nproc: int = 2, n: int = 8192, heads: int = 8, dim: int = 64, kv_chunks: int = 8,
    chunk: int = 64, repeats: int = 3,
) -> list[dict[str, Any]]:
    """Run the ring case; one row per mode (``ring-fwd-...``, ``ring-fwdbwd-...``) in the
    runner's format, with the per-rank numbers and the memory target added.

    Raises:
        ValueError: ``n`` not divisible by ``2·nproc`` or a non-positive size.
        RuntimeError: the torchrun workers failed (their output is in the message).
    """
    check_positive_ints(
        nproc=nproc, n=n, heads=heads, dim=dim, kv_chunks=kv_chunks, chunk=chunk, repeats=repeats
    )
    if nproc < 2 or n % (2 * nproc):
        raise ValueError(f"need nproc >= 2 and n divisible by 2·nproc, got n={n}, nproc={nproc}")
    with tempfile.TemporaryDirectory(prefix="attnkit-ring-") as folder:
        out = os.path.join(folder, "ranks.json")
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(nproc), "-m", "attnkit.bench.ring", "--worker",
            "--length", str(n), "--heads", str(heads), "--dim", str(dim),
            "--kv-chunks", str(kv_chunks), "--chunk", str(chunk), "--repeats", str(repeats),
            "--out", out,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(
                f"ring benchmark workers failed (status {done.returncode}):\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
            )
        ranks = json.loads(Path(out).read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(nproc)
    try:
        import attnkit

        def whole(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return attnkit.attention(q, k, v, causal=True)

        base = _measure(_calls(whole, n, heads, dim, seed=0), repeats)
    finally:
        torch.set_num_threads(threads)
    rows = []
    for mode in MODES:
        per_rank = [r[mode] for r in ranks]
        worst = max(per_rank, key=lambda r: r["total_mb"])
        slowest = max(r["ms"] for r in per_rank)
        ratio = worst["total_mb"] / base[mode]["total_mb"]
        limit = 1 / nproc + 0.10
        rows.append({
            "case": f"ring-{mode}-N{n}-P{nproc}",
            "ours_ms": round(slowest, 1),
            "baseline": f"attnkit.attention, whole sequence, one process, {nproc} threads",
            "baseline_ms": round(base[mode]["ms"], 1),
            "speedup": round(base[mode]["ms"] / slowest, 3),
            "ours_peak_mb": round(worst["peak_mb"], 1),
            "baseline_peak_mb": round(base[mode]["peak_mb"], 1),
            "ours_total_mb": round(worst["total_mb"], 1),
            "baseline_total_mb": round(base[mode]["total_mb"], 1),
            "memory_ratio_total": round(ratio, 3),
            "target": f"total memory per rank ≤ {limit:.2f}× one process's (1/P + 10 %)",
            "met": ratio <= limit,
            "ours_spread": round(max(r["spread"] for r in per_rank), 3),
            "baseline_spread": round(base[mode]["spread"], 3),
            "ranks": per_rank,
            "settings": {"n": n, "heads": heads, "dim": dim, "kv_chunks": kv_chunks,
                         "chunk": chunk, "layout": "zigzag", "causal": True},
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m attnkit.bench.ring [--nproc P] [--length N] ...``: print the rows as JSON."""
    parser = argparse.ArgumentParser(prog="python -m attnkit.bench.ring")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--kv-chunks", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    rows = ring_rows(nproc=args.nproc, n=args.length, heads=args.heads, dim=args.dim,
                     kv_chunks=args.kv_chunks, chunk=args.chunk, repeats=args.repeats)
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
