"""``attnkit experiment ...``: the papers' experiments, reproduced."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnkit.cli import options as opt

Minutes = opt.minutes(
    "For EACH of the two models; the documented tables trained 8-10 minutes each.", default=10.0
)
experiment_app = typer.Typer(help="Reproduce the papers' experiments.", no_args_is_help=True)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")


@experiment_app.command("length")
def length(
    data: Annotated[
        str, typer.Option(help="Data with long sources, e.g. num2words:de-en:max=999999999.")
    ] = "num2words:de-en:max=999999999",
    minutes: Minutes = 10.0,
    hidden_dim: Annotated[int, typer.Option(help="RNNsearch's hidden size.", min=4)] = 128,
    buckets: Annotated[int, typer.Option(help="Source-length buckets.", min=2)] = 6,
    out: Annotated[
        Path, typer.Option(help="Folder for both runs, length.json and length.png.")
    ] = Path("runs/length"),
    seed: Annotated[int, typer.Option(min=0)] = 0,
    source_tokens: Annotated[
        str,
        typer.Option(
            help="char (the lengths of the tables in docs/experiments.md), auto (the data's "
            "suggestion), word or bpe."
        ),
    ] = "char",
    source_vocab: Annotated[int, typer.Option(help="Source vocabulary (bpe, word).", min=8)] = 8000,
) -> None:
    """Bahdanau et al. 2015, Figure 2: RNNenc against RNNsearch, quality by source length.

    Trains both with the same data, parameter count (within 10 %) and time budget, then scores
    the test split in buckets of source length.
    """
    from attnkit.tasks import length_experiment

    summary = length_experiment.run(
        data,
        out,
        minutes=minutes,
        hidden_dim=hidden_dim,
        buckets=buckets,
        seed=seed,
        source_tokens=source_tokens,
        source_vocab=source_vocab,
    )
    typer.echo(f"parameters: {summary['parameters']}, steps: {summary['steps']}")
    typer.echo(
        f"{'source length':>14}  {'pairs':>5}  "
        + "  ".join(f"{m:>18}" for m in summary["parameters"])
    )
    for bucket in summary["buckets"]:
        cells = "  ".join(
            f"BLEU {s['bleu']:5.1f} ex {s['exact']:5.1f}" for s in bucket["scores"].values()
        )
        typer.echo(f"{bucket['low']:>6}..{bucket['high']:<6}  {bucket['pairs']:>5}  {cells}")
    typer.echo(f"wrote {out / 'length.json'} and {out / 'length.png'}")


@experiment_app.command("eviction")
def eviction(
    out: Annotated[
        Path, typer.Option(help="Folder for eviction.json, eviction.png and any run trained here.")
    ] = Path("runs/eviction"),
    music: Annotated[
        Path | None,
        typer.Option(help="A run of 'attnkit train music'; default: train one in OUT/music."),
    ] = None,
    text: Annotated[
        Path | None,
        typer.Option(help="A text language model run; default: train one in OUT/text."),
    ] = None,
    minutes: Annotated[
        float, typer.Option(min=0.05, help="Training minutes for each model trained here.")
    ] = 15.0,
    sequences: Annotated[
        int, typer.Option(min=1, help="Held-out sequences scored per model (at most).")
    ] = 64,
    budgets: Annotated[
        str, typer.Option(help="Cache budgets as shares of the sequence length, comma-separated.")
    ] = "0.1,0.2,0.5",
    sinks: Annotated[int, typer.Option(min=0, help="First positions the sinks policy keeps.")] = 4,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """H2O (Zhang et al. 2023) and attention sinks (Xiao et al. 2024) against a sliding window:
    held-out sequences scored token by token through KV caches of 10, 20 and 50 % of their
    length, against the full cache, for the Music Transformer and a Bible language model.
    """
    from attnkit.tasks import eviction_experiment

    try:
        shares = tuple(float(b) for b in budgets.split(","))
    except ValueError:
        shares = ()
    if not shares or not all(0 < b <= 1 for b in shares):
        raise typer.BadParameter(f"--budgets must be numbers in (0, 1], got {budgets!r}")
    results = eviction_experiment.run(
        out, music=music, text=text, minutes=minutes, sequences=sequences, budgets=shares,
        sinks=sinks, seed=seed,
    )
    for name, result in results.items():
        rows = result["rows"]
        full = rows[0]["perplexity"]
        typer.echo(
            f"{name}: {result['sequences']} sequences of {result['length']} tokens; full cache "
            f"perplexity {full:.3f} (NLL {rows[0]['nll']:.4f})"
        )
        for row in rows[1:]:
            worse = 100 * (row["perplexity"] / full - 1)
            typer.echo(
                f"  {100 * row['budget']:>4.0f} % ({row['slots']:>3} slots) {row['policy']:<7} "
                f"perplexity {row['perplexity']:8.3f}  ({worse:+.1f} %)"
            )
    typer.echo(f"wrote {out / 'eviction.json'} and {out / 'eviction.png'}")
