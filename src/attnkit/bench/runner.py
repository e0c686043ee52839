"""Run the benchmark cases, print the table, write the JSON.

Every case is timed interleaved with its baseline in this one process (see
:mod:`attnkit.bench.measure`), then each side runs once more under the memory profiler.
"""

from __future__ import annotations

import datetime
import fnmatch
import gc
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from attnkit.bench.cases import CASES, Case
from attnkit.bench.measure import median, peak_bytes, spread, time_interleaved, timed_peak_bytes
from attnkit.explain._files import write_atomic

MIB = 1 << 20


RING = "ring"  # the ring-attention case of attnkit.bench.ring (torchrun), when installed


def ring_module() -> Any | None:
    """:mod:`attnkit.bench.ring` if it exists (it provides ``ring_rows(*, repeats) -> rows``),
    else ``None``; imported lazily, only when the ring case is asked for."""
    import importlib

    try:
        return importlib.import_module("attnkit.bench.ring")
    except ModuleNotFoundError as error:
        if error.name == "attnkit.bench.ring":
            return None
        raise


def select(quick: bool, names: list[str] | None) -> list[Case]:
    """The cases to run: those matching ``names`` (exact names or shell patterns such as
    ``local-*``), else all (``quick``: the quick subset). The ``ring`` case is not a
    :class:`Case` (it runs under torchrun): :func:`wants_ring` tells whether it was asked for.

    Raises:
        ValueError: a name or pattern that matches no case (the message lists them).
    """
    if not names:
        return [c for c in CASES if c.quick or not quick]
    ring = ring_module() is not None
    chosen: list[Case] = []
    for name in names:
        hits = [c for c in CASES if fnmatch.fnmatchcase(c.name, name)]
        if not hits and not (ring and fnmatch.fnmatchcase(RING, name)):
            known = [c.name for c in CASES] + ([RING] if ring else [])
            raise ValueError(f"--case {name!r} matches no benchmark case; known: {known}")
        chosen += [c for c in hits if c not in chosen]
    return chosen


def wants_ring(quick: bool, names: list[str] | None) -> bool:
    """Whether to run the ring case: named (``--case ring``), or a full run without names;
    never in ``--quick`` unless named; ``False`` when :mod:`attnkit.bench.ring` is absent."""
    asked = any(fnmatch.fnmatchcase(RING, name) for name in names) if names else not quick
    return asked and ring_module() is not None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        load = "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "load": load,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }


def measure(case: Case, *, repeats: int, warmup: int) -> dict[str, Any]:
    """One row of the table for ``case``."""
    ours, base = case.build()
    fns: dict[str, Callable[[], object]] = {"ours": ours}
    if base is not None:
        fns["baseline"] = base
    if case.single_run:
        measured = {name: timed_peak_bytes(fn) for name, fn in fns.items()}
        times = {name: [ms] for name, (_, ms) in measured.items()}
        peaks = {name: peak / MIB for name, (peak, _) in measured.items()}
    else:
        times = time_interleaved(
            fns,
            warmup=case.warmup if case.warmup is not None else warmup,
            repeats=case.repeats if case.repeats is not None else repeats,
        )
        peaks = {name: peak_bytes(fn) / MIB for name, fn in fns.items()}
    ours_ms, ours_mb = median(times["ours"]), peaks["ours"]
    base_ms = base_mb = speedup = None
    if base is not None:
        base_ms, base_mb = median(times["baseline"]), peaks["baseline"]
        speedup = base_ms / ours_ms
    row = {
        "case": case.name,
        "ours_ms": round(ours_ms, 3),
        "baseline": case.baseline if base is not None else f"{case.baseline} (not run: RAM)",
        "baseline_ms": None if base_ms is None else round(base_ms, 3),
        "speedup": None if speedup is None else round(speedup, 3),
        "ours_peak_mb": round(ours_mb, 2),
        "baseline_peak_mb": None if base_mb is None else round(base_mb, 2),
        "target": case.target.describe(),
        "met": case.target.met(speedup, ours_mb, base_mb),
        "ours_spread": round(spread(times["ours"]), 3),
        "baseline_spread": None if base is None else round(spread(times["baseline"]), 3),
    }
    del ours, base, fns
    gc.collect()
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned plain-text table."""
    columns = [
        ("case", "case"), ("ours_ms", "ours ms"), ("baseline_ms", "baseline ms"),
        ("speedup", "speedup"), ("ours_peak_mb", "ours MiB"), ("baseline_peak_mb", "base MiB"),
        ("target", "target"), ("met", "met"), ("baseline", "baseline"),
    ]

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if value is True or value is False:
            return "yes" if value else "NO"
        return f"{value:g}" if isinstance(value, float) else str(value)

    table = [[title for _, title in columns]]
    table += [[cell(row[key]) for key, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (what ``docs/benchmarks.md`` shows)."""

    def cell(value: Any, digits: int = 1) -> str:
        if value is None:
            return "–"
        if value is True or value is False:
            return "yes" if value else "**no**"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = [
        "| case | baseline | ours ms | baseline ms | speedup | ours MiB | baseline MiB "
        "| target | met | spread ours / base |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        spreads = f"{cell(r['ours_spread'], 2)} / {cell(r['baseline_spread'], 2)}"
        lines.append(
            f"| {r['case']} | {r['baseline']} | {cell(r['ours_ms'])} | {cell(r['baseline_ms'])} "
            f"| {cell(r['speedup'], 2)} | {cell(r['ours_peak_mb'])} | "
            f"{cell(r['baseline_peak_mb'])} | {r['target']} | {cell(r['met'])} | {spreads} |"
        )
    return "\n".join(lines)


def run(
    *,
    quick: bool = False,
    json_path: Path | None = None,
    cases: list[str] | None = None,
    repeats: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the benchmark and return one dict per case (see :mod:`attnkit.bench`).

    Args:
        quick: only the quick subset (about 3 minutes on 2 cores), 3 repeats.
        json_path: also write the rows there as a JSON list.
        cases: names or shell patterns of cases to run (default: all, or the quick subset);
            ``ring`` runs :mod:`attnkit.bench.ring` under torchrun (also part of a full run).
        repeats: timed rounds per case (default 3 with ``quick``, else 5).
        echo: where progress and the table go (default: print to stdout).

    Raises:
        ValueError: an unknown case name.
    """
    say = echo if echo is not None else (lambda s: print(s, flush=True))
    chosen = select(quick, cases)
    repeats = repeats if repeats is not None else (3 if quick else 5)
    info = machine()
    say(
        f"attnkit bench on {info['cpu']} ({info['cores']} cores, torch {info['torch']}, "
        f"{info['torch_threads']} threads, OMP_WAIT_POLICY={info['omp_wait_policy']}), "
        f"{info['date']}, load average {info['load']}"
    )
    if info["load"] != "?" and float(info["load"]) > (info["cores"] or 1):
        say(
            "  note: the machine is busy; the block kernels run many short parallel ops, each "
            "waiting for a descheduled thread (OMP_WAIT_POLICY=PASSIVE limits the damage; "
            "`make bench` sets it when the load exceeds the cores)"
        )
    rows = []
    for case in chosen:
        say(f"  {case.name} ...")
        rows.append(measure(case, repeats=repeats, warmup=1))
        row = rows[-1]
        say(f"    ours {row['ours_ms']} ms, baseline {row['baseline_ms']} ms, "
            f"speedup {row['speedup']}, peak {row['ours_peak_mb']} / {row['baseline_peak_mb']} MiB")
    if wants_ring(quick, cases):
        say(f"  {RING} (torchrun) ...")
        module = ring_module()
        rows.extend(module.ring_rows(repeats=repeats) if module is not None else [])
    say(format_table(rows))
    if json_path is not None:
        write_atomic(Path(json_path), (json.dumps(rows, indent=2) + "\n").encode())
        say(f"wrote {json_path}")
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m attnkit.bench [--quick] [--json PATH] [--case NAME ...]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="attnkit bench",
        description="Time attnkit's kernels beside their baselines, interleaved in one process; "
        "print the table (see docs/benchmarks.md).",
    )
    parser.add_argument("--quick", action="store_true", help="the quick subset (~3 min)")
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="write the rows as JSON here"
    )
    parser.add_argument(
        "--case", action="append", default=None, metavar="NAME",
        help="run only this case (repeatable; shell patterns such as 'local-*' work)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case")
    args = parser.parse_args(argv)
    try:
        run(quick=args.quick, json_path=args.json, cases=args.case, repeats=args.repeats)
    except ValueError as error:
        print(f"attnkit bench: {error}", file=sys.stderr)
        return 2
    return 0
