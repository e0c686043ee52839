"""``attnkit train music`` and ``attnkit generate music``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from attnkit.cli import options as opt
from attnkit.cli.runs import run_argument
from attnkit.training import is_main_process

generate_app = typer.Typer(
    help="Generate with a trained model (music: MIDI + MusicXML + attention picture).",
    no_args_is_help=True,
)


Minutes = opt.minutes(
    "Needs: the documented models trained 1,200 updates (--max-steps 1200), 15-40 minutes on 2 "
    "cores."
)

Run = run_argument("music")

def register(app: typer.Typer, train_app: typer.Typer) -> None:
    train_app.command("music", help=_TRAIN_HELP)(train_music)
    generate_app.command("music")(generate_music)
    app.add_typer(generate_app, name="generate")


_TRAIN_HELP = (
    "Train an event language model on the Bach chorales of music21's corpus (parsed once and "
    "cached; split by tune; all twelve keys for training): the Music Transformer "
    "(--positions relative), the same decoder with absolute positions (--positions sinusoidal "
    "or learned), or an LSTM without attention (--model lstm). Reports the validation and test "
    "negative log-likelihood per event beside the unigram baseline."
)


def train_music(
    out: opt.Out,
    model: Annotated[str, typer.Option(help="transformer or lstm (no attention).")] = (
        "transformer"
    ),
    positions: Annotated[
        str, typer.Option(help="Transformer positions: relative, sinusoidal, learned or rope.")
    ] = "relative",
    voices: Annotated[
        str, typer.Option(help="Voices to encode: satb (all four) or e.g. s (soprano alone).")
    ] = "satb",
    width: Annotated[int, typer.Option(min=2, help="Model width (embedding and hidden).")] = 128,
    heads: Annotated[int, typer.Option(min=1, help="Attention heads (Transformer).")] = 4,
    layers: Annotated[int, typer.Option(min=1, help="Layers (Transformer blocks or LSTM).")] = 3,
    ff_dim: Annotated[int, typer.Option(min=1, help="Feed-forward width (Transformer).")] = 512,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.9, help="Dropout.")] = 0.1,
    window: Annotated[int, typer.Option(min=2, help="Events per training window.")] = 256,
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per batch.")] = 16,
    transpose: Annotated[bool, typer.Option(help="Augment training with all twelve keys.")] = True,
    limit: Annotated[
        int | None, typer.Option(min=3, help="Use only this many chorales (quick tries).")
    ] = None,
    minutes: Minutes = None,
    epochs: opt.Epochs = None,
    max_steps: opt.MaxSteps = None,
    lr: opt.LearningRate = 1e-3,
    warmup: opt.Warmup = 100,
    eval_every: opt.EvalEvery = 400,
    seed: opt.Seed = 0,
    resume: opt.Resume = False,
) -> None:
    """Train a music model and report validation/test NLL per event and the unigram baseline."""
    from attnkit.data.music import eval_windows
    from attnkit.explain._files import write_atomic
    from attnkit.tasks.music import MusicSettings, event_nll, train_music, unigram_nll

    settings = MusicSettings(
        model=model,
        positions=positions,
        voices=voices,
        width=width,
        heads=heads,
        layers=layers,
        ff_dim=ff_dim,
        dropout=dropout,
        window=window,
        batch_size=batch_size,
        transpose=transpose,
        limit=limit,
        seed=seed,
    )
    training = opt.train_config(
        out=out,
        resume=resume,
        minutes=minutes,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        warmup=warmup,
        eval_every=eval_every,
        seed=seed,
        settings=settings,
    )
    result, composer, task = train_music(settings, training, out, resume=resume)
    if not is_main_process():
        return  # rank 0 of a data-parallel run scores the test split
    test = eval_windows(task.data.test, length=window, batch_size=batch_size)
    scores = {
        "model": model if model == "lstm" else f"transformer-{positions}",
        "parameters": sum(p.numel() for p in composer.model.parameters()),
        "steps": result.steps,
        "minutes": result.seconds / 60,
        "valid_nll": event_nll(composer.model, task.valid),
        "test_nll": event_nll(composer.model, test),
        "unigram_valid_nll": unigram_nll(task.data, "valid", transpose=transpose),
        "unigram_test_nll": unigram_nll(task.data, "test", transpose=transpose),
        **task.data.sizes(),
    }
    write_atomic(out / "test_scores.json", json.dumps(scores, indent=2).encode())
    typer.echo(
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min ({result.stop_reason}); "
        f"NLL per event (nats): valid {scores['valid_nll']:.3f}, test {scores['test_nll']:.3f}; "
        f"unigram valid {scores['unigram_valid_nll']:.3f}, test {scores['unigram_test_nll']:.3f}"
    )


def generate_music(
    run: Run,
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="The MIDI file to write; .musicxml and .attention.png go beside it."
        ),
    ] = Path("piece.mid"),
    bars: Annotated[int, typer.Option(min=1, help="Full measures to generate.")] = 8,
    temperature: Annotated[
        float, typer.Option(min=0.01, help="Sampling temperature (lower: safer).")
    ] = 1.0,
    top_k: Annotated[
        int | None, typer.Option(min=1, help="Sample only among the k likeliest events.")
    ] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Seed for a repeatable piece.")] = None,
    cache: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Keep at most this many events in each layer's KV cache (constant memory "
            "however long the piece); default: keep every event.",
        ),
    ] = None,
    policy: Annotated[
        str,
        typer.Option(
            help="What a bounded cache evicts: window (keeps the most recent), sinks (the first "
            "4 and the most recent) or h2o (the most recent half and the most attended half)."
        ),
    ] = "h2o",
) -> None:
    """Sample a piece (KV-cached decoding) and write MIDI, MusicXML and the attention PNG."""
    from attnkit.layers import CachePolicy
    from attnkit.tasks.music import Composer, midi_path

    midi_path(out)  # refuse a bad --out before loading anything
    bounded = None if cache is None else CachePolicy(max_len=cache, policy=policy)
    composer = Composer.load(run)
    generated = composer.generate(
        bars=bars, temperature=temperature, top_k=top_k, seed=seed, cache=bounded
    )
    paths = composer.write(generated, out)
    bars_done = len(generated.piece.bars)
    kept = "" if bounded is None else f"; KV cache: {cache} slots per layer ({policy})"
    typer.echo(
        f"{len(generated.ids) - 1} events, {len(generated.piece.notes)} notes, {bars_done} "
        f"barlines (stopped: {generated.stopped}, seed {generated.seed}{kept}); wrote "
        + ", ".join(str(p) for p in paths.values())
    )
