"""``attnkit train speech`` and ``attnkit transcribe``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from attnkit.cli import options as opt
from attnkit.cli.runs import run_argument
from attnkit.data.speech.corpus import DEFAULT_SPEECH_SPEC, describe, describe_vocabulary
from attnkit.explain._files import write_atomic
from attnkit.training import is_main_process

Data = Annotated[
    str,
    typer.Option(
        "--data", help="Speech data spec: espeak[:mixed|numbers|sentences][:n=4000,...] or "
        "folder:PATH (a folder with transcripts.tsv)."
    ),
]
Run = run_argument("speech")
Beam = Annotated[int, typer.Option("--beam", help="Beam size (1 = greedy).", min=1)]

_TRAIN_HELP = (
    "Train a speech recogniser: Listen, Attend and Spell with location-aware attention, on "
    "log-mel features, character outputs; reports WER and CER on the test split.\n\n"
    "Data sources:\n\n" + describe().replace("\n", "\n\n") + "\n\n"  # a paragraph each
    "Vocabulary: the model spells what its data says. The built-in speech covers numbers "
    "0-999 and a small grammar (see 'attnkit transcribe --help'); --data folder:PATH trains "
    "on your own recordings and their words."
)
_TRANSCRIBE_HELP = (
    "Print the transcript of each WAV file and draw where each character attended in time."
    "\n\n"
    + describe_vocabulary()
    + " A transcript whose confidence is below that of 99 % of the validation utterances is "
    "marked 'unsure': the speech probably holds words outside the vocabulary.\n\n"
    "A file that cannot be read is reported (naming it) and the others are still transcribed; "
    "the exit status is then 2."
)


Minutes = opt.minutes(
    "Needs: about 15 minutes on 2 cores for a WER near 1 % on held-out voices (the first run "
    "also synthesises the speech, 3-4 minutes, not counted)."
)

def register(app: typer.Typer, train_app: typer.Typer) -> None:
    train_app.command("speech", help=_TRAIN_HELP)(train_speech)
    app.command("transcribe", help=_TRANSCRIBE_HELP)(transcribe)


def train_speech(
    out: opt.Out,
    data: Data = DEFAULT_SPEECH_SPEC,
    listener_dim: Annotated[
        int, typer.Option(help="Listener (pyramidal BiLSTM) output width.", min=2)
    ] = 192,
    listener_layers: Annotated[
        int, typer.Option(help="Pyramid layers; each halves the time resolution.", min=1)
    ] = 2,
    speller_dim: Annotated[int, typer.Option(help="Speller LSTM width.", min=1)] = 192,
    attention_dim: Annotated[
        int, typer.Option(help="Width of the attention's tanh.", min=1)
    ] = 64,
    n_mels: Annotated[int, typer.Option(help="Mel channels of the features.", min=1)] = 40,
    hop_ms: Annotated[
        float, typer.Option(help="Feature frame step in milliseconds.", min=1.0)
    ] = 20.0,
    batch_size: Annotated[int, typer.Option(help="Utterances per batch.", min=1)] = 32,
    beam: Beam = 1,
    minutes: Minutes = None,
    epochs: opt.Epochs = None,
    max_steps: opt.MaxSteps = None,
    lr: opt.LearningRate = 2e-3,
    warmup: opt.Warmup = 100,
    eval_every: opt.EvalEvery = 250,
    seed: opt.Seed = 0,
    resume: opt.Resume = False,
) -> None:
    """Train a speech recogniser and report its test-split WER and CER."""
    import dataclasses

    from attnkit.data.speech import FeatureConfig, load_features
    from attnkit.tasks.speech import SpeechSettings, train_recognizer

    hop = round(hop_ms * FeatureConfig.sample_rate / 1000)  # samples at the default 16 kHz
    features = FeatureConfig(n_mels=n_mels, hop_length=hop)
    settings = SpeechSettings(
        data=data,
        listener_dim=listener_dim,
        listener_layers=listener_layers,
        speller_dim=speller_dim,
        attention_dim=attention_dim,
        batch_size=batch_size,
        seed=seed,
        features=dataclasses.asdict(features),
    )
    ms = ("--hop-ms", lambda samples: f"{samples * 1000 / features.sample_rate:g}")
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
        shown={"hop_length": ms},
    )
    result, transcriber, task = train_recognizer(settings, training, out, resume=resume)
    if not is_main_process():
        return  # rank 0 of a data-parallel run scores the test split
    test = load_features(task.splits.test, features)
    for problem in task.splits.problems + test.problems:
        typer.echo(f"skipped: {problem}", err=True)
    scores = transcriber.evaluate(test.features, test.texts, beam=beam)
    scores |= {"beam": beam, "utterances": len(test)}
    write_atomic(out / "test_scores.json", json.dumps(scores, indent=2).encode())
    typer.echo(
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min ({result.stop_reason}); "
        f"test ({len(test)} utterances, held-out voices, beam {beam}): WER {scores['wer']:.1f} %, "
        f"CER {scores['cer']:.1f} %, exact {scores['exact']:.1f} %"
    )


def transcribe(
    run: Run,
    files: Annotated[list[Path], typer.Argument(metavar="WAVS", help="WAV files to transcribe.")],
    beam: Beam = 1,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Folder for the pictures (FILE.alignment.png: the characters' attention over "
            "time).",
        ),
    ] = Path("."),
    plot: Annotated[
        bool, typer.Option("--plot/--no-plot", help="Draw the alignment picture of each file.")
    ] = True,
) -> None:
    """Print the transcript of each WAV file (see the help text above)."""
    from attnkit.tasks.speech import Transcriber

    transcriber = Transcriber.load(run)
    if transcriber.vocabulary is not None:
        typer.echo(
            f"attnkit: this model knows {len(transcriber.vocabulary)} words (its data: "
            f"{transcriber.settings.data}; 'attnkit transcribe --help' lists them); other words "
            "come out as the nearest ones it knows",
            err=True,
        )
    failed = False
    for result in transcriber.transcribe_files(files, beam=beam):
        if result.error is not None:
            typer.echo(f"attnkit: error: {result.error}", err=True)
            failed = True
            continue
        unsure = transcriber.unsure(result.confidence)  # type: ignore[arg-type]
        mark = "\t(unsure: probably words outside the vocabulary)" if unsure else ""
        typer.echo(f"{result.path}\t{result.text}{mark}")
        if not plot:
            continue
        alignment = transcriber.align(result.features, result.text)
        picture = transcriber.plot_alignment(
            alignment, out / f"{result.path.stem}.alignment.png",
            title=f"{result.path.name}: {result.text}",
        )
        typer.echo(f"alignment: {picture}", err=True)
    if failed:
        raise typer.Exit(code=2)
