"""``attnkit train translate``, ``attnkit translate`` and ``attnkit evaluate``."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer

from attnkit.cli import options as opt
from attnkit.cli.runs import run_argument
from attnkit.data.translation import DEFAULT_SPEC, describe_sources, load_pairs
from attnkit.explain._files import write_atomic
from attnkit.models import ATTENTIONS
from attnkit.training import is_main_process

Data = Annotated[
    str,
    typer.Option(
        "--data", help="Data spec, e.g. num2words:de-en, bible:en-es, gettext:fr, tsv:PATH."
    ),
]
Run = run_argument("translate")
Beam = Annotated[int, typer.Option("--beam", help="Beam size (1 = greedy).", min=1)]


Minutes = opt.minutes(
    "Needs: about 3 minutes on 2 cores for num2words:de-en (>= 95 % exact at every number "
    "length; the demo trains 2.5); 30 minutes give real text (bible, gettext) BLEU 12-26."
)

def register(app: typer.Typer, train_app: typer.Typer) -> None:
    train_app.command("translate", help=_TRAIN_HELP)(train_translate)
    app.command("translate")(translate)
    app.command("evaluate")(evaluate)


_TRAIN_HELP = (
    "Train a translator: RNNenc, RNNsearch with any attention, or a Transformer.\n\n"
    "Data sources:\n\n" + describe_sources().replace("\n", "\n\n")  # a paragraph each
)


def train_translate(
    out: opt.Out,
    data: Data = DEFAULT_SPEC,
    model: Annotated[str, typer.Option(help="rnnsearch, rnnenc or transformer.")] = "rnnsearch",
    attention: Annotated[
        str, typer.Option(help=f"RNNsearch attention: {', '.join(sorted(ATTENTIONS))}.")
    ] = "bahdanau",
    cell: Annotated[str, typer.Option(help="RNN cell: gru or lstm.")] = "gru",
    embed_dim: Annotated[int, typer.Option(min=1)] = 64,
    hidden_dim: Annotated[int, typer.Option(min=2)] = 128,
    layers: Annotated[int, typer.Option(min=1)] = 1,
    heads: Annotated[int, typer.Option(min=1)] = 4,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    source_tokens: Annotated[
        str,
        typer.Option(
            help="Source tokens: auto (the data's suggestion: for num2words, words for English "
            "and BPE pieces for compound number words such as German vierundzwanzig, which "
            "become morphemes vier|und|zwanzig), char, word or bpe."
        ),
    ] = "auto",
    target_tokens: Annotated[str, typer.Option(help="Target tokens, as --source-tokens.")] = "auto",
    source_vocab: Annotated[
        int | None,
        typer.Option(
            help="Source vocabulary size (bpe, word). Default: the data's suggestion (60 BPE "
            "pieces for German number words), else 8000.",
            min=8,
        ),
    ] = None,
    target_vocab: Annotated[
        int | None,
        typer.Option(help="Target vocabulary size (bpe, word), as --source-vocab.", min=8),
    ] = None,
    minutes: Minutes = None,
    epochs: opt.Epochs = None,
    max_steps: opt.MaxSteps = None,
    lr: opt.LearningRate = 3e-3,
    warmup: opt.Warmup = 100,
    eval_every: opt.EvalEvery = 500,
    seed: opt.Seed = 0,
    resume: opt.Resume = False,
) -> None:
    """Train a translator and report its test-split scores."""
    from attnkit.tasks.translate import TranslateSettings, train_translator

    settings = TranslateSettings(
        data=data,
        model=model,
        attention=attention,
        cell=cell,
        embed_dim=embed_dim,
        hidden_dim=hidden_dim,
        layers=layers,
        heads=heads,
        batch_size=batch_size,
        source_tokens=source_tokens,
        target_tokens=target_tokens,
        source_vocab=source_vocab,
        target_vocab=target_vocab,
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
    result, translator = train_translator(settings, training, out, resume=resume)
    if not is_main_process():
        return  # rank 0 of a data-parallel run scores the test split
    test = load_pairs(settings.data, seed=settings.seed).test
    scores = translator.evaluate(test)
    write_atomic(out / "test_scores.json", json.dumps(scores, indent=2).encode())
    typer.echo(
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min ({result.stop_reason}); "
        f"test: exact {scores['exact']:.1f} %, BLEU {scores['bleu']:.1f}, chrF {scores['chrf']:.1f}"
    )


class Runtime(str, Enum):
    torch = "torch"
    onnx = "onnx"


def translate(
    run: Run,
    texts: Annotated[list[str], typer.Argument(metavar="TEXTS", help="Sentences to translate.")],
    beam: Beam = 1,
    runtime: Annotated[
        Runtime,
        typer.Option(
            "--runtime",
            help="torch, or onnx: onnxruntime runs the files 'attnkit export RUN --out DIR' "
            "wrote; give DIR as RUN.",
        ),
    ] = Runtime.torch,
) -> None:
    """Translate TEXTS with a trained model."""
    from attnkit.tasks.translate import Translator

    if runtime is Runtime.onnx:
        from attnkit.cli.export import export_extra
        from attnkit.export.onnx_translator import load_onnx_translator

        with export_extra():
            translator = load_onnx_translator(run)
    else:
        translator = Translator.load(run)
    for text, translation in zip(texts, translator.translate(texts, beam=beam), strict=True):
        typer.echo(f"{text}\t{translation}")
        if (guess := _guessed(translator, text)) is not None:
            typer.echo(f"attnkit: note: {text!r}: {guess}", err=True)


def _guessed(translator: object, text: str) -> str | None:
    """Why the translation of ``text`` is a guess (empty, or pieces the model never saw), or
    ``None``: a model translates anything into words it knows, however foreign the input."""
    if not text.strip():
        return "nothing to translate; the model's answer for an empty text is a guess"
    source = getattr(translator, "source", None)
    unknown = source.unknown(text) if source is not None else []
    if not unknown:
        return None
    shown = ", ".join(repr(piece) for piece in dict.fromkeys(unknown))
    data = translator.settings.data  # type: ignore[attr-defined]
    return (
        f"{shown} never appeared in its training data ({data}), so the translation is a guess"
    )


def evaluate(
    run: Run,
    beam: Beam = 1,
    split: Annotated[str, typer.Option(help="test or valid.")] = "test",
    alignment: Annotated[
        bool,
        typer.Option(
            "--alignment",
            help="Also score where attention looks, for German→English numbers (num2words:de-en, "
            "word-level English): the share of English words whose most-attended German token "
            "lies in the right part (thousands, hundreds, rest) of the number.",
        ),
    ] = False,
) -> None:
    """BLEU, chrF and exact match of a trained model on its data's test (or valid) split."""
    from attnkit.tasks.alignment_eval import number_alignment_accuracy, numbers_in
    from attnkit.tasks.translate import Translator

    if split not in ("test", "valid"):
        raise typer.BadParameter(f"split must be test or valid, got {split!r}")
    translator = Translator.load(run)
    pairs = getattr(load_pairs(translator.settings.data, seed=translator.settings.seed), split)
    scores = translator.evaluate(pairs, beam=beam)
    typer.echo(
        f"{translator.settings.data} {split} ({len(pairs)} pairs, beam {beam}): "
        f"exact {scores['exact']:.2f} %, BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f}"
    )
    if alignment:
        numbers = numbers_in([source for source, _ in pairs], lang="de")
        score = number_alignment_accuracy(translator, numbers)
        typer.echo(
            f"alignment accuracy {score.accuracy:.1f} % ({score.words} English words of "
            f"{score.numbers} {split} numbers)"
        )
