"""The ``attnkit`` command.

Every subcommand has ``--help``. Bad arguments exit with status 2 and a one-line reason
(set ``ATTNKIT_DEBUG=1`` to see the traceback of an error instead).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from attnkit._version import __version__
from attnkit.cli import demo, translate
from attnkit.cli import experiment as experiment_cli
from attnkit.cli import explain as explain_cli
from attnkit.cli import music as music_cli

app = typer.Typer(
    name="attnkit",
    help="attnkit: the attention mechanism made real, fast and visible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(
    help="Train a model for one application (checkpoints go to --out).", no_args_is_help=True
)
app.add_typer(train_app, name="train")


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


demo.register(app)
translate.register(app, train_app)
experiment_cli.register(app, train_app)
explain_cli.register(app, train_app)
music_cli.register(app, train_app)


def main() -> None:
    """Entry point: run the app, turning attnkit's input errors into a one-line reason."""
    try:
        app()
    except (ValueError, TypeError, FileNotFoundError) as error:
        if os.environ.get("ATTNKIT_DEBUG"):
            raise
        typer.echo(f"attnkit: error: {error}", err=True)
        sys.exit(2)
