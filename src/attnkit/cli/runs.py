"""The ``RUN`` argument of the commands that use a trained run, defined once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from attnkit.training import CheckpointError
from attnkit.training.store import POINTERS, resolve_checkpoint


def run_argument(train: str, help: str | None = None) -> Any:
    """The ``RUN`` argument of a command using runs of ``attnkit train <train>``: a run folder
    (or a checkpoint, or its ``last``/``best`` pointer file, as :func:`load_checkpoint` takes).

    A file that is no pointer (``attnkit translate hello.txt "x"``) is refused at parsing
    (status 2) saying that RUN is a run folder, instead of the checkpoint loader's
    "hello.txt names hello, which does not exist".
    """
    text = help or f"A run folder written by 'attnkit train {train}'."
    return Annotated[
        Path, typer.Argument(metavar="RUN", help=text, callback=_folder_or_pointer(train))
    ]


def _folder_or_pointer(train: str) -> Callable[[Path], Path]:
    def check(run: Path) -> Path:
        if not run.is_file() or run.name in POINTERS:  # a pointer's own error names its target
            return run
        try:
            resolve_checkpoint(run)
        except CheckpointError:
            raise typer.BadParameter(
                f"{run} is a file; RUN must be a run folder (made by 'attnkit train {train} "
                f"--out DIR')"
            ) from None
        return run

    return check
