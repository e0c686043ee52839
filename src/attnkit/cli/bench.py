"""``attnkit bench``: attnkit's kernels timed beside their baselines (see docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Only the quick subset (under 3 minutes on 2 cores).")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", metavar="PATH", help="Also write the rows as JSON.")
    ] = None,
    case: Annotated[
        list[str] | None,
        typer.Option(
            "--case", metavar="NAME",
            help="Run only this case (repeatable; shell patterns such as 'local-*' work).",
        ),
    ] = None,
) -> None:
    """Time attnkit's kernels against their baselines, interleaved in one process.

    Each case runs beside its baseline (PyTorch SDPA, a naive implementation, or float32
    matmul throughput): a warm-up, then the median of several repeats, and the peak tensor
    memory beyond the inputs. Prints the table; --json writes a list of objects
    {"case", "ours_ms", "baseline", "baseline_ms", "speedup", "ours_peak_mb",
    "baseline_peak_mb", ...}. An unknown --case exits with status 2 and lists the known ones.
    """
    from attnkit.bench import run

    run(quick=quick, json_path=json_path, cases=case or None, echo=typer.echo)
