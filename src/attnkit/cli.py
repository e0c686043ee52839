"""The ``attnkit`` command.

Every subcommand has ``--help``. Bad arguments exit with status 2 and a one-line reason
(set ``ATTNKIT_DEBUG=1`` to see the traceback of an error instead).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from attnkit._version import __version__

app = typer.Typer(
    name="attnkit",
    help="attnkit: the attention mechanism made real, fast and visible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"attnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """attnkit: the attention mechanism made real, fast and visible."""


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the heatmap PNG.")] = Path("out"),
) -> None:
    """Attention on a small real case: questions scored against standard-library documentation.

    Each question (query) is scored against each module's documentation (keys) with cosine
    similarity, normalised with softmax, and the documents (values) are summed with those
    weights. Prints each document's weight and writes a heatmap PNG of all the weights.
    """
    from attnkit.tasks import documents_demo

    result = documents_demo.run()
    typer.echo(documents_demo.report(result))
    path = documents_demo.plot(result, out / "demo_attention.png")
    typer.echo(f"\nheatmap of every question's weights over the documents: {path}")


def main() -> None:
    """Entry point: run the app, turning attnkit's input errors into a one-line reason."""
    try:
        app()
    except (ValueError, TypeError, FileNotFoundError) as error:
        if os.environ.get("ATTNKIT_DEBUG"):
            raise
        typer.echo(f"attnkit: error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
