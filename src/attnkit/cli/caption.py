"""``attnkit train caption`` and ``attnkit caption``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from attnkit.cli import options as opt
from attnkit.cli.runs import run_argument

Data = Annotated[
    str,
    typer.Option(
        "--data",
        help="Caption data: digits[:min=3,max=6,gap=4,jitter=2,noise=0.1,train=8000] "
        "(strips of real handwritten digits) or folder:PATH[:height=32] (images + captions.tsv).",
    ),
]


Run = run_argument("caption")
Minutes = opt.minutes(
    "Needs: about 10 minutes on 2 cores for >= 90 % exact match with soft attention (hard "
    "attention: longer)."
)

def register(app: typer.Typer, train_app: typer.Typer) -> None:
    train_app.command("caption")(train_caption)
    app.command("caption")(caption)


def train_caption(
    out: opt.Out,
    data: Data = "digits",
    attention: Annotated[
        str, typer.Option(help="soft (backprop) or hard (sampled, REINFORCE).")
    ] = "soft",
    channels: Annotated[int, typer.Option(help="CNN channels (second block).", min=2)] = 32,
    hidden_dim: Annotated[int, typer.Option(help="LSTM state size.", min=1)] = 256,
    attention_dim: Annotated[int, typer.Option(help="Width of the additive score.", min=1)] = 64,
    doubly_stochastic: Annotated[
        float, typer.Option(help="λ of the doubly stochastic regularisation (soft).", min=0.0)
    ] = 0.02,
    entropy_weight: Annotated[
        float, typer.Option(help="Entropy bonus of REINFORCE (hard).", min=0.0)
    ] = 0.01,
    expected_fraction: Annotated[
        float,
        typer.Option(help="Share of hard-attention batches trained with the expected context.",
                     min=0.0, max=1.0),
    ] = 0.5,
    expected_warmup_epochs: Annotated[
        int,
        typer.Option(help="Hard attention: epochs trained only with the expected context.",
                     min=0),
    ] = 3,
    batch_size: Annotated[int, typer.Option(help="Images per update.", min=1)] = 64,
    backend: Annotated[
        str, typer.Option(help="Attention kernel: auto or a registered kernel name.")
    ] = "auto",
    minutes: Minutes = None,
    epochs: opt.Epochs = None,
    max_steps: opt.MaxSteps = None,
    lr: opt.LearningRate = 2e-3,
    warmup: opt.Warmup = 100,
    eval_every: opt.EvalEvery = 250,
    seed: opt.Seed = 0,
    resume: opt.Resume = False,
) -> None:
    """Train a Show-Attend-Tell captioner and report its test-split scores."""
    from attnkit.explain._files import write_atomic
    from attnkit.tasks.caption import CaptionSettings, train_captioner

    settings = CaptionSettings(
        data=data,
        attention=attention,
        channels=channels,
        hidden_dim=hidden_dim,
        attention_dim=attention_dim,
        doubly_stochastic=doubly_stochastic,
        entropy_weight=entropy_weight,
        expected_fraction=expected_fraction,
        expected_warmup_epochs=expected_warmup_epochs,
        batch_size=batch_size,
        backend=backend,
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
    run = train_captioner(settings, training, out, resume=resume)
    scores = run.captioner.evaluate(run.data.test)
    where = ""
    if all(example.boxes for example in run.data.test):
        scores["attention_accuracy"] = run.captioner.attention_accuracy(run.data.test)
        where = f", attention on the right object {scores['attention_accuracy']:.1f} %"
    write_atomic(out / "test_scores.json", json.dumps(scores, indent=2).encode())
    result = run.result
    typer.echo(
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min ({result.stop_reason}); "
        f"test ({len(run.data.test)} images): exact {scores['exact']:.1f} %, "
        f"BLEU {scores['bleu']:.1f}, WER {scores['wer']:.1f} %{where}"
    )


def caption(
    run: Run,
    images: Annotated[
        list[Path],
        typer.Argument(
            metavar="IMAGES",
            help="Image files, or folders (every image in them; with a "
            "captions.tsv the folder is also scored)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", metavar="DIR", help="Folder for the pictures (NAME.attention.png)."
        ),
    ] = Path("."),
    beam: Annotated[int, typer.Option("--beam", help="Beam size (1 = greedy).", min=1)] = 1,
    plot: Annotated[
        bool, typer.Option("--plot/--no-plot", help="Write the attention picture of each image.")
    ] = True,
    columns: Annotated[
        int | None,
        typer.Option(
            "--columns",
            help="Panels per row (default: as many as fit in 16 inches; longer captions wrap).",
            min=1,
        ),
    ] = None,
) -> None:
    """Caption IMAGES with a trained model: print 'file<TAB>caption' and draw where each word
    looked. Unreadable files are reported on stderr (exit status 2) after the others are done."""
    from attnkit.data.images import image_files, read_captions_tsv
    from attnkit.explain.image import plot_image_attention
    from attnkit.tasks.caption import Captioner
    from attnkit.tasks.metrics import translation_scores

    captioner = Captioner.load(run)
    files: list[Path] = []
    scored: list[Path] = []
    for path in images:
        if path.is_dir():
            files.extend(image_files(path))
            if (path / "captions.tsv").is_file():
                scored.append(path)
        else:
            files.append(path)
    if not files:
        raise typer.BadParameter("no image files given (the folders hold none)")
    results, problems = captioner.caption_files(files, beam=beam)
    captions = {}
    for item in results:
        captions[item.path] = item.caption
        typer.echo(f"{item.path}\t{item.caption}")
        if plot:
            seen = captioner.attend(item.image, item.caption)
            picture = plot_image_attention(
                seen.image, seen.words, seen.maps, out / f"{item.path.stem}.attention.png",
                columns=columns,
            )
            typer.echo(f"  attention: {picture}", err=True)
    for folder in scored:
        pairs = [(folder / name, ref) for name, ref in read_captions_tsv(folder / "captions.tsv")]
        pairs = [(p, ref) for p, ref in pairs if p in captions]
        if pairs:
            scores = translation_scores([captions[p] for p, _ in pairs], [r for _, r in pairs])
            typer.echo(
                f"{folder} ({len(pairs)} captioned images): exact {scores['exact']:.1f} %, "
                f"BLEU {scores['bleu']:.1f}"
            )
    for problem in problems:
        typer.echo(f"attnkit: error: {problem}", err=True)
    if problems:
        raise typer.Exit(code=2)
