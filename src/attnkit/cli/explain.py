"""``attnkit explain``: what a model attends to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("explain")(explain)


def explain(
    first: Annotated[
        str, typer.Argument(help="A sentence (MiniLM), or a run folder of a translation model.")
    ],
    text: Annotated[
        str | None, typer.Argument(help="With a run folder: the sentence to translate.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the HTML viewer and PNGs.")] = Path(
        "out/explain"
    ),
) -> None:
    """Show what a model attends to.

    attnkit explain "The cat sat on the mat because it was tired." runs the pretrained MiniLM
    encoder in attnkit's own layers: it writes the head view of every layer (attention.html),
    the attention rollout (rollout.png) and the last layer's heads, and prints what each word
    attends to most.

    attnkit explain runs/NAME "dreihundertvierundzwanzig" translates with a trained model and
    draws the source × target alignment (alignment.png, attention.html).
    """
    from attnkit.tasks import explain_text

    if text is not None:
        run = Path(first)
        if not run.is_dir():
            raise typer.BadParameter(f"{first!r} is not a run folder (two arguments: RUN TEXT)")
        result = explain_text.explain_translation(run, text, out)
        header = "output token -> the input token it looked at most"
    else:
        result = explain_text.explain_sentence(first, out)
        header = "token -> the tokens it attends to most (last layer, heads averaged)"
    typer.echo(header)
    for token, targets in result.top:
        shown = ", ".join(f"{t} {w:.2f}" for t, w in targets)
        typer.echo(f"  {token:>14} -> {shown}")
    for path in result.files:
        typer.echo(f"wrote {path}")
