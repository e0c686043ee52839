"""``attnkit explain``: what a model attends to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LISTED = 200  # longer inputs list their first LISTED // 2 tokens


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("explain")(explain)


def explain(
    first: Annotated[
        str,
        typer.Argument(
            metavar="SENTENCE|RUN",
            help="A sentence (MiniLM), or a run folder of a translation model.",
        ),
    ],
    text: Annotated[
        str | None,
        typer.Argument(metavar="TEXT", help="With a run folder: the sentence to translate."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the HTML viewer and PNGs.")] = Path(
        "out/explain"
    ),
    hf: Annotated[
        Path | None,
        typer.Option(
            "--hf",
            help="A local Hugging Face model folder (encoder, decoder or encoder-decoder; "
            "needs the hf extra): explain TEXT with it; an encoder-decoder also takes the "
            "target text.",
        ),
    ] = None,
    summary: Annotated[
        str | None,
        typer.Option(
            "--summary",
            help="With a sentence: record only a summary of each layer's weights, made "
            "without the full weights (long inputs): 'key_totals' (the attention each token "
            "received in total, a heat strip) or 'heads_mean' (the mean of the heads).",
        ),
    ] = None,
) -> None:
    """Show what a model attends to.

    attnkit explain "The cat sat on the mat because it was tired." runs the pretrained MiniLM
    encoder in attnkit's own layers: it writes the head view of every layer (attention.html),
    the attention rollout (rollout.png) and the last layer's heads, and prints what each word
    attends to most.

    attnkit explain runs/NAME "dreihundertvierundzwanzig" translates with a trained model and
    draws the source × target alignment (alignment.png, attention.html).

    attnkit explain "..." --summary key_totals records only the attention each token received
    in total (made inside the kernel, without the full weights) and shades the tokens by it.

    attnkit explain --hf DIR "text" [TARGET] runs any local Hugging Face model on attnkit's
    attention backend: the head view (attention.html; cross_attention.html and
    decoder_attention.html too for an encoder-decoder) and rollout.png. Texts longer than the
    model's positions are cut into chunks; long inputs keep each token's top keys.
    """
    from attnkit.tasks import explain_text

    if summary is not None and (hf is not None or text is not None):
        raise typer.BadParameter("--summary is for a sentence through MiniLM (one argument)")
    if summary is not None and summary not in explain_text.SUMMARIES:
        raise typer.BadParameter(
            f"--summary must be one of {', '.join(explain_text.SUMMARIES)}, got {summary!r}"
        )
    if hf is not None:
        try:
            from attnkit.tasks.explain_hf import explain_hf
        except ImportError as error:
            raise typer.BadParameter(
                f"--hf needs the hf extra (pip install 'attnkit[hf]'): {error}"
            ) from None
        if not hf.is_dir():
            raise typer.BadParameter(f"--hf {str(hf)!r} is not a folder")
        try:
            result = explain_hf(hf, first, out, target=text)
        except (ValueError, FileNotFoundError) as error:
            raise typer.BadParameter(str(error)) from None
        header = (
            "token -> the tokens it attends to most (last layer, heads averaged)"
            if text is None
            else "target token -> the source tokens it looks at most (last cross-attention)"
        )
    elif text is not None:
        run = Path(first)
        if not run.is_dir():
            raise typer.BadParameter(f"{first!r} is not a run folder (two arguments: RUN TEXT)")
        result = explain_text.explain_translation(run, text, out)
        header = "output token -> the input token it looked at most"
    else:
        result = explain_text.explain_sentence(first, out, summary=summary)
        header = (
            "token -> the attention it received in total (last layer, heads averaged)"
            if summary == "key_totals"
            else "token -> the tokens it attends to most (last layer, heads averaged)"
        )
    if result.note is not None:
        typer.echo(f"note: {result.note}")
    typer.echo(header)
    listed = result.top if len(result.top) <= LISTED else result.top[: LISTED // 2]
    for token, targets in listed:
        shown = ", ".join(f"{t} {w:.2f}" for t, w in targets)
        typer.echo(f"  {token:>14} -> {shown}")
    if len(listed) < len(result.top):
        typer.echo(f"  ... and {len(result.top) - len(listed)} more tokens: see the viewer")
    for path in result.files:
        typer.echo(f"wrote {path}")
