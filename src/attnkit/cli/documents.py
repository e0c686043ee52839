"""``attnkit ask``, ``attnkit train summarize`` and ``attnkit summarize``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from attnkit.cli import options as opt
from attnkit.cli.runs import run_argument
from attnkit.tasks.summarize import NO_REPEAT_NGRAM

Run = run_argument("summarize")


Minutes = opt.minutes(
    "Needs: about 35 minutes on 2 cores for ROUGE-L 26.5 (30 without coverage, then 5 with "
    "--coverage --init-from)."
)

def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("ask")(ask)
    train_app.command("summarize")(train_summarize)
    app.command("summarize")(summarize)


def ask(
    question: Annotated[
        str | None,
        typer.Argument(
            metavar="QUESTION", help="The question, e.g. 'what computes a matrix inverse?'."
        ),
    ] = None,
    docs: Annotated[
        Path | None,
        typer.Option(
            "--docs",
            help="Folder of .txt/.md files (default: the built-in docstrings of the standard "
            "library and the installed scientific packages).",
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Passages to show.", min=1)] = 3,
    html: Annotated[
        Path, typer.Option("--html", help="Where to write the highlighted answer page.")
    ] = Path("answer.html"),
    temperature: Annotated[
        float | None,
        typer.Option("--temperature", help="τ of the passage attention softmax(τ·cos).", min=1e-3),
    ] = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate",
            help="Instead of answering: accuracy@1/@5 of finding each test docstring from its "
            "summary line, beside BM25.",
        ),
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="With --evaluate: also write the scores here.")
    ] = None,
) -> None:
    """Ask a question over a pile of documents: two levels of attention (passages, then
    sentences) with the MiniLM encoder running in attnkit's layers."""
    from attnkit.data.documents import Document, load_docstrings
    from attnkit.tasks import ask as ask_task

    tau = ask_task.TEMPERATURE if temperature is None else temperature
    if evaluate:
        test = load_docstrings().test
        documents = [Document.from_text(e.name, e.body) for e in test]
        asker = ask_task.Asker.from_documents(
            documents, collection="docstrings:eval", progress=True, temperature=tau
        )
        scores = ask_task.evaluate_retrieval(test, asker=asker)
        typer.echo(
            f"built-in docstrings, test split: {int(scores['questions'])} summaries against "
            f"{int(scores['questions'])} docstrings ({int(scores['passages'])} passages)\n"
            f"  attention (MiniLM, two-level)  @1 {scores['attention@1']:5.1f} %   "
            f"@5 {scores['attention@5']:5.1f} %   NLL {scores['nll']:.3f} at τ = {tau:g}\n"
            f"  BM25                           @1 {scores['bm25@1']:5.1f} %   "
            f"@5 {scores['bm25@5']:5.1f} %"
        )
        if json_out is not None:
            from attnkit.tasks.summarize import write_scores

            write_scores(json_out, scores | {"temperature": tau})
        return
    if question is None:
        raise typer.BadParameter("give a QUESTION (or --evaluate)")
    def announce(line: str) -> None:
        typer.echo(f"attnkit: {line}", err=True)

    if docs is not None:
        asker, report = ask_task.Asker.from_folder(
            docs, progress=True, announce=announce, temperature=tau
        )
        for name, reason in report.problems:
            typer.echo(f"attnkit: skipped {name}: {reason}", err=True)
    else:
        s = load_docstrings()
        entries = s.train + s.valid + s.test
        documents = [Document.from_text(e.name, e.body) for e in entries]
        asker = ask_task.Asker.from_documents(
            documents, collection="docstrings:all", progress=True, announce=announce,
            shipped=ask_task.shipped_index(), temperature=tau,
        )
    answer = asker.ask(question, top=top)
    typer.echo(ask_task.render_text(answer))
    path = ask_task.write_html(answer, html)
    typer.echo(f"\nhighlighted answer: {path}")


def train_summarize(
    out: opt.Out,
    data: Annotated[
        str, typer.Option("--data", help="'docstrings' (built in) or tsv:PATH (body<TAB>summary).")
    ] = "docstrings",
    copy: Annotated[
        bool, typer.Option("--copy/--no-copy", help="Pointer (copy) mechanism on or off.")
    ] = True,
    coverage: Annotated[
        bool, typer.Option("--coverage/--no-coverage", help="Coverage in the attention and loss.")
    ] = True,
    coverage_weight: Annotated[
        float, typer.Option("--coverage-weight", help="λ of the coverage loss.", min=0.0)
    ] = 1.0,
    embed_dim: Annotated[int, typer.Option("--embed-dim", help="Word embedding size.", min=1)] = 96,
    hidden_dim: Annotated[
        int, typer.Option("--hidden-dim", help="Encoder/decoder state size (even).", min=2)
    ] = 128,
    vocab_size: Annotated[
        int, typer.Option("--vocab-size", help="Words in the vocabulary.", min=8)
    ] = 10000,
    max_source: Annotated[int, typer.Option("--max-source", help="Source words kept.", min=1)] = 80,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per batch.", min=1)] = 32,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from",
            help="Start from this run's vocabulary and weights (e.g. switch coverage on for a "
            "last phase, as See et al. did).",
        ),
    ] = None,
    minutes: Minutes = None,
    epochs: opt.Epochs = None,
    max_steps: opt.MaxSteps = None,
    lr: opt.LearningRate = 2e-3,
    warmup: opt.Warmup = 100,
    eval_every: opt.EvalEvery = 500,
    seed: opt.Seed = 0,
    resume: opt.Resume = False,
) -> None:
    """Train a pointer-generator summariser (docstring body -> summary line) and report its
    test-split ROUGE beside the lead-sentence baseline."""
    from attnkit.tasks.summarize import (
        SummarizeSettings,
        baseline_scores,
        load_summary_pairs,
        train_summarizer,
        write_scores,
    )

    settings = SummarizeSettings(
        data=data,
        copy=copy,
        coverage=coverage,
        coverage_weight=coverage_weight,
        embed_dim=embed_dim,
        hidden_dim=hidden_dim,
        vocab_size=vocab_size,
        max_source=max_source,
        batch_size=batch_size,
        seed=seed,
        init_from=None if init_from is None else str(init_from),
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
    result, summarizer = train_summarizer(settings, training, out, resume=resume)
    test = load_summary_pairs(settings.data, seed=settings.seed).test
    scores = {"model": summarizer.evaluate(test), "lead": baseline_scores(test)}
    write_scores(out / "test_scores.json", scores)
    typer.echo(
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min ({result.stop_reason}); "
        + _rouge_line("test", scores)
    )


def _rouge_line(split: str, scores: dict[str, dict[str, float]]) -> str:
    m, lead = scores["model"], scores["lead"]
    return (
        f"{split} ROUGE-1/2/L: model {m['rouge1']:.1f}/{m['rouge2']:.1f}/{m['rougeL']:.1f}, "
        f"lead sentence {lead['rouge1']:.1f}/{lead['rouge2']:.1f}/{lead['rougeL']:.1f}"
    )


def summarize(
    run: Run,
    files: Annotated[
        list[Path] | None,
        typer.Argument(metavar="FILES", help="Text files to summarise (UTF-8)."),
    ] = None,
    beam: Annotated[int, typer.Option("--beam", help="Beam size (1 = greedy).", min=1)] = 1,
    no_repeat_ngram: Annotated[
        int,
        typer.Option(
            "--no-repeat-ngram",
            help="Never repeat a word n-gram of the summary, nor a word right after itself "
            "(0: allow repeats).",
            min=0,
        ),
    ] = NO_REPEAT_NGRAM,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate", help="Score the run on its data's test split beside the lead sentence."
        ),
    ] = False,
) -> None:
    """Summarise FILES in one line each with a trained summariser (or --evaluate it)."""
    from attnkit.data.documents import decode_text
    from attnkit.tasks.summarize import Summarizer, baseline_scores, load_summary_pairs

    summarizer = Summarizer.load(run)
    if evaluate:
        test = load_summary_pairs(summarizer.settings.data, seed=summarizer.settings.seed).test
        model = summarizer.evaluate(test, beam=beam, no_repeat_ngram=no_repeat_ngram)
        scores = {"model": model, "lead": baseline_scores(test)}
        typer.echo(_rouge_line(f"{len(test)} test pairs, beam {beam},", scores))
        typer.echo(json.dumps(scores, indent=2))
        return
    if not files:
        raise typer.BadParameter("give one or more FILES to summarise (or --evaluate)")
    texts, kept = [], []
    for path in files:  # a bad file is reported and skipped; the rest are summarised
        try:
            texts.append(decode_text(path.read_bytes(), str(path)))
        except (OSError, ValueError) as error:
            if isinstance(error, OSError) and error.strerror:
                reason = error.strerror
            else:  # decode_text's message starts with the file's name: do not repeat it
                reason = str(error).removeprefix(f"{path}: ")
            typer.echo(f"attnkit: skipped {path}: {reason}", err=True)
            continue
        kept.append(path)
    if not kept:
        raise ValueError(f"none of the {len(files)} files could be read (see above)")
    summaries = summarizer.summarize(texts, beam=beam, no_repeat_ngram=no_repeat_ngram)
    for path, summary in zip(kept, summaries, strict=True):
        typer.echo(f"{path}\t{summary}")
