"""``attnkit demo``: the main job (translation with attention) or the documents example."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated

import typer

from attnkit.cli import options as opt
from attnkit.training import TrainConfig, load_checkpoint

Minutes = opt.minutes(
    "For translate: the model reaches its figures in the README within 2.5 minutes on 2 cores.",
    default=2.5,
)

MISSES_SHOWN = 5


DEMOS = ("translate", "documents")


def _not_a_demo(which: str) -> str:
    """What to say of a WHICH that names no demo: a close name as click says it of a mistyped
    command ("Did you mean 'train'?")."""
    said = f"expected translate or documents, got {which!r}"
    close = difflib.get_close_matches(which, DEMOS, n=1)
    return f"{said}. Did you mean {close[0]!r}?" if close else said


def _mark(output: str, reference: str) -> str:
    return "ok" if output == reference else f"wrong, expected {reference!r}"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    which: Annotated[
        str,
        typer.Argument(
            metavar="WHICH", help="translate (the main job) or documents (a worked example)."
        ),
    ] = "translate",
    out: Annotated[Path, typer.Option(help="Folder for the pictures and the demo run.")] = Path(
        "out"
    ),
    minutes: Minutes = 2.5,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="translate: continue the interrupted demo run in --out/demo-run (Ctrl-C prints "
            "this command) instead of starting afresh.",
        ),
    ] = False,
) -> None:
    """Show attention at work.

    translate: train RNNsearch (Bahdanau attention) on German→English number words for a few
    minutes, print the test exact match and BLEU, translate examples and draw where each English
    word looked in the German (out/demo_alignment.png).

    documents: score questions against standard-library documentation (queries against keys),
    normalise with softmax, sum the documents with those weights, and draw the weights
    (out/demo_attention.png).
    """
    if which == "documents":
        if resume:
            raise typer.BadParameter("--resume continues the translate demo; documents trains "
                                     "nothing")
        from attnkit.tasks import documents_demo

        result = documents_demo.run()
        typer.echo(documents_demo.report(result))
        path = documents_demo.plot(result, out / "demo_attention.png")
        typer.echo(f"\nheatmap of every question's weights over the documents: {path}")
        return
    if which != "translate":
        raise typer.BadParameter(_not_a_demo(which))
    if resume:  # refused before any data is loaded when there is nothing to continue
        run_dir = out / "demo-run"
        opt.check_run_folder(run_dir, resume=True)
        opt.check_unfinished(load_checkpoint(run_dir), run_dir, TrainConfig(minutes=minutes))
    from attnkit.tasks import translation_demo
    from attnkit.tasks.magnitudes import render_table

    typer.echo("training RNNsearch on num2words:de-en (German -> English number words) ...")
    summary = translation_demo.run(out, minutes=minutes, resume=resume)
    scores = summary.scores
    typer.echo(
        f"\ntrained {summary.steps} steps in {summary.minutes:.1f} min. Held-out test numbers: "
        f"exact match {scores['exact']:.1f} %, BLEU {scores['bleu']:.1f}, chrF {scores['chrf']:.1f}"
    )
    typer.echo("exact match by number length:")
    typer.echo(render_table(summary.magnitudes))
    typer.echo("some held-out numbers (never seen in training):")
    for german, english, reference in summary.translations:
        typer.echo(f"  {german:<44} -> {english}  ({_mark(english, reference)})")
    if summary.misses:
        typer.echo(f"wrong: {len(summary.misses)} of the numbers scored above, the smallest:")
        for miss in summary.misses[:MISSES_SHOWN]:
            mark = _mark(miss.output, miss.reference)
            typer.echo(f"  {miss.source:<44} -> {miss.output}  ({mark})")
    typer.echo(f"\nwhere each English word looked in the German: {summary.heatmap}")
