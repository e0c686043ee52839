"""Options every ``attnkit train ...`` command shares, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnkit.training import TrainConfig

Out = Annotated[Path, typer.Option("--out", help="Run folder for checkpoints and results.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")]
Minutes = Annotated[
    float | None, typer.Option("--minutes", help="Time budget in minutes.", min=0.01)
]
Epochs = Annotated[int | None, typer.Option("--epochs", help="Passes over the data.", min=1)]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", help="Stop after N updates.", min=1)]
LearningRate = Annotated[float, typer.Option("--lr", help="Peak learning rate.", min=1e-7)]
Warmup = Annotated[int, typer.Option("--warmup", help="Warm-up updates.", min=0)]
EvalEvery = Annotated[
    int | None, typer.Option("--eval-every", help="Evaluate every N updates.", min=1)
]
Seed = Annotated[int, typer.Option("--seed", help="Seed for data order and weights.", min=0)]


def train_config(
    *,
    minutes: float | None,
    epochs: int | None,
    max_steps: int | None,
    lr: float,
    warmup: int,
    eval_every: int | None,
    seed: int,
) -> TrainConfig:
    """A TrainConfig from the shared options; with no budget given, 10 minutes.

    The cosine schedule needs a length: with only a time budget it is estimated generously
    (``decay_steps`` large), so the learning rate stays near its peak; give ``--max-steps``
    or ``--epochs`` for a full decay.
    """
    if minutes is None and epochs is None and max_steps is None:
        minutes = 10.0
    decay = None if (epochs is not None or max_steps is not None) else 1_000_000
    if max_steps is not None and warmup >= max_steps:
        warmup = max_steps // 10  # a short run still warms up, then decays
    return TrainConfig(
        lr=lr,
        warmup_steps=warmup,
        decay_steps=decay,
        minutes=minutes,
        epochs=epochs,
        max_steps=max_steps,
        eval_every=eval_every,
        seed=seed,
    )
