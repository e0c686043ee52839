"""Time attnkit's side of benchmark cases before and after a change, in one process.

The other ``attnkit bench`` figures are ratios to a baseline; this one compares two versions of
attnkit directly. The base version (a git revision) is exported from the repository and
imported under another package name (``attnkit_before``), so both run in the same process,
alternately (ABBA), on the same inputs (each case's ``build()`` seeds them). With
``--cpu-time`` each call is timed by the process's CPU time rather than the wall clock: on a
machine shared with other work, a single thread's CPU time hardly moves with their load.

    python scripts/bench_before_after.py --base main --cpu-time 'local-*' 'dense-fwd-*'

(with ``OMP_NUM_THREADS=1`` for the single-thread figures). Cases whose ``build()`` differs
between the versions, or exist in one only, are skipped with a note.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export(base: str, folder: Path) -> None:
    """``src/attnkit`` at revision ``base`` as the package ``attnkit_before`` in ``folder``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", base, "src/attnkit"], check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryDirectory() as raw:
        tar = Path(raw) / "src.tar"
        tar.write_bytes(archive)
        with tarfile.open(tar) as t:
            t.extractall(raw, filter="data")
        for path in (Path(raw) / "src" / "attnkit").rglob("*.py"):
            target = folder / "attnkit_before" / path.relative_to(Path(raw) / "src" / "attnkit")
            target.parent.mkdir(parents=True, exist_ok=True)
            text = re.sub(r"\battnkit\b(?!_)", "attnkit_before", path.read_text())
            target.write_text(text)


def timed(fns: dict[str, object], repeats: int, clock) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for r in range(repeats):
        for name, fn in list(fns.items())[:: 1 if r % 2 == 0 else -1]:
            start = clock()
            fn()
            times[name].append((clock() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="case names or shell patterns")
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-time", action="store_true", help="time by process CPU time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        export(args.base, Path(folder))
        sys.path.insert(0, folder)
        before = importlib.import_module("attnkit_before.bench.cases").CASES
        after = importlib.import_module("attnkit.bench.cases").CASES
        import torch

        clock = time.process_time if args.cpu_time else time.perf_counter
        print(f"base {args.base}; {torch.get_num_threads()} threads; clock {clock.__name__}")
        print("| case | before ms (min / median) | after ms (min / median) | after/before (min) |")
        print("|---|---:|---:|---:|")
        old = {c.name: c for c in before}
        for case in after:
            if not any(fnmatch.fnmatchcase(case.name, p) for p in args.cases):
                continue
            if case.name not in old:
                print(f"| {case.name} | (not in {args.base}) | | |")
                continue
            fns = {"before": old[case.name].build()[0], "after": case.build()[0]}
            t = timed(fns, args.repeats, clock)
            b, a = t["before"], t["after"]
            print(
                f"| {case.name} | {min(b):.1f} / {statistics.median(b):.1f} | "
                f"{min(a):.1f} / {statistics.median(a):.1f} | {min(a) / min(b):.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
