"""``attnkit export``: a trained translator as ONNX files (see docs/export.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from attnkit.cli.runs import run_argument

Run = run_argument("translate")


class Format(str, Enum):
    onnx = "onnx"


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    run: Run,
    out: Annotated[Path, typer.Option("--out", help="New (or empty) folder for the files.")],
    format: Annotated[Format, typer.Option("--format", help="File format.")] = Format.onnx,
) -> None:
    """Export a Transformer translator: encoder.onnx, decoder_step.onnx, its tokenizers and
    manifest.json (inputs, outputs, dynamic axes, opset). Translate with the files:
    attnkit translate OUT --runtime onnx "..." (both need attnkit's export extra)."""
    from attnkit.export.onnx_translator import export_translator

    with export_extra():
        manifest = export_translator(run, out)
    files = ", ".join(sorted(p.name for p in manifest.parent.iterdir()))
    typer.echo(f"wrote {manifest.parent}: {files}")


@contextmanager
def export_extra() -> Iterator[None]:
    """A missing ``export`` extra as one line and status 2, like bad input."""
    from attnkit.export.onnx import MissingExtraError

    try:
        yield
    except MissingExtraError as error:
        raise ValueError(str(error)) from None
