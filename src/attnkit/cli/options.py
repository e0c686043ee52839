"""Options every ``attnkit train ...`` command shares, defined once."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from attnkit.training import Checkpoint, TrainConfig, load_checkpoint

DEFAULT_MINUTES = 10.0  # the budget when none is given
MIN_MINUTES = 0.05  # the shortest budget any command accepts (3 seconds)

Out = Annotated[
    Path, typer.Option("--out", metavar="DIR", help="Run folder for checkpoints and results.")
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run in --out from its last checkpoint, with the learning rate, "
        "warm-up and seed it started with (an interrupted run prints this command).",
    ),
]
Epochs = Annotated[int | None, typer.Option("--epochs", help="Passes over the data.", min=1)]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", help="Stop after N updates.", min=1)]
LearningRate = Annotated[float, typer.Option("--lr", help="Peak learning rate.", min=1e-7)]
Warmup = Annotated[int, typer.Option("--warmup", help="Warm-up updates.", min=0)]
EvalEvery = Annotated[
    int | None, typer.Option("--eval-every", help="Evaluate every N updates.", min=1)
]
Seed = Annotated[int, typer.Option("--seed", help="Seed for data order and weights.", min=0)]


def minutes(needs: str, *, default: float | None = None) -> Any:
    """The ``--minutes`` option, its help ending with what this application needs."""
    if default is None:
        when = (
            f"Default: {DEFAULT_MINUTES:g} when neither --max-steps nor --epochs is given. The "
            "learning rate decays over whichever budget ends first; the time before a --resume "
            "counts."
        )
    else:
        when = ""  # click shows the default
    text = " ".join(part for part in ("Time budget in minutes.", when, needs) if part)
    return Annotated[
        float | None if default is None else float,
        typer.Option("--minutes", help=text, min=MIN_MINUTES),
    ]


def check_run_folder(out: Path, resume: bool) -> None:
    """Refuse, before any data is loaded, an ``--out`` that does not fit ``--resume``.

    Raises:
        ValueError: ``--resume`` with no run in ``out``, or a run in ``out`` without it.
    """
    last = out / "last"
    if resume and not last.is_file():
        what = "does not exist" if not out.exists() else "holds no checkpoint"
        raise ValueError(
            f"--resume: {out} {what}, so there is nothing to resume; leave out --resume to "
            f"start a new run there"
        )
    if not resume and last.is_file():
        checkpoint = last.read_text(encoding="utf-8", errors="replace").strip()
        raise ValueError(
            f"--out {out} already holds a run (last checkpoint {checkpoint}): add --resume to "
            f"continue it, or choose another --out"
        )


def check_unfinished(saved: Checkpoint, out: Path, training: TrainConfig) -> None:
    """Refuse, before any data is loaded, a ``--resume`` of the run in ``out``, whose last
    checkpoint is ``saved``, when it already finished under the budgets ``training`` gives
    (the Trainer would train 0 steps and only score it again). A run stopped before its last
    evaluation was saved is not finished: resuming completes it.

    Raises:
        ValueError: naming the budget reached, where, and the option to raise.
    """
    state = saved.trainer_state
    if not state.get("final_metrics") or state.get("last_eval_step") != state.get("step"):
        return
    step, epoch, seconds = state.get("step", 0), state.get("epoch", 0), state.get("seconds", 0.0)
    if training.epochs is not None and epoch >= training.epochs:
        reached, option = f"--epochs {training.epochs} reached at epoch {epoch}", "--epochs"
    elif training.max_steps is not None and step >= training.max_steps:
        reached, option = f"--max-steps {training.max_steps} reached at step {step}", "--max-steps"
    elif training.minutes is not None and seconds >= training.minutes * 60:
        reached = f"--minutes {training.minutes:g} reached after {seconds / 60:.1f} min"
        option = "--minutes"
    else:
        return
    raise ValueError(
        f"{out} already finished ({reached}); nothing to resume: raise {option} or choose "
        f"another --out"
    )


Shown = Mapping[str, tuple[str, Callable[[Any], Any]]]  # field -> (option, saved value -> shown)


def check_resume_settings(
    saved: Checkpoint, out: Path, settings: Any, shown: Shown | None = None
) -> None:
    """Refuse, before any data is loaded, a ``--resume`` whose options differ from those the run
    in ``out`` was started with (the settings dataclass saved as the task of its last
    checkpoint, ``saved``).

    A field holding a dict (e.g. speech's ``features``) is compared key by key. ``shown`` names
    the option of a field whose option has another name or unit, with the conversion from the
    saved value (e.g. ``{"hop_length": ("--hop-ms", samples_to_ms)}``); any other field is
    named ``--field-name``.

    Raises:
        ValueError: naming each differing option with the run's value and the one given.
    """
    before = _flat(saved.task_config)
    given = _flat(json.loads(json.dumps(dataclasses.asdict(settings), default=str)))  # as saved
    differ = [name for name in given if name in before and before[name] != given[name]]
    if differ:
        options = dict(shown or {})
        plain = ("--{}", lambda value: value)

        def said(name: str) -> str:
            option, value = options.get(name, plain)
            option = option.format(name.replace("_", "-"))
            return f"{option} {value(given[name])} (the run has {value(before[name])})"

        raise ValueError(
            f"--resume: {out} was started with other settings: "
            f"{', '.join(said(name) for name in differ)}; leave those options out (or give the "
            f"run's values) to continue it, or choose another --out"
        )


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with each dict value's keys lifted to the top (``{"features": {"n_mels": 40}}``
    -> ``{"n_mels": 40}``), so that they are named like the options that set them."""
    flat: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[name] = value
    return flat


def train_config(
    *,
    out: Path,
    resume: bool,
    minutes: float | None,
    epochs: int | None,
    max_steps: int | None,
    lr: float,
    warmup: int,
    eval_every: int | None,
    seed: int,
    settings: Any = None,
    shown: Shown | None = None,
) -> TrainConfig:
    """A TrainConfig from the shared options (with no budget given, 10 minutes), after
    checking ``--out`` against ``--resume`` (:func:`check_run_folder`) and, for a resumed run
    (its last checkpoint read once), that it has budget left (:func:`check_unfinished`) and
    that the task's ``settings`` are the run's (:func:`check_resume_settings`, ``shown`` as
    there).

    The schedule's length follows the budgets: ``--max-steps`` or ``--epochs`` in updates,
    ``--minutes`` in time, or whichever ends first when several are given.
    """
    check_run_folder(out, resume)
    saved = load_checkpoint(out) if resume else None
    if minutes is None and epochs is None and max_steps is None:
        minutes = DEFAULT_MINUTES
    if saved is not None:  # the schedule goes on as it started, whatever budget the resume gives
        warmup = saved.trainer_state["train_config"]["warmup_steps"]
    elif max_steps is not None and warmup >= max_steps:
        warmup = max_steps // 10  # a short run still warms up, then decays
    training = TrainConfig(
        lr=lr,
        warmup_steps=warmup,
        minutes=minutes,
        epochs=epochs,
        max_steps=max_steps,
        eval_every=eval_every,
        seed=seed,
    )
    if saved is not None:
        check_unfinished(saved, out, training)
        if settings is not None:
            check_resume_settings(saved, out, settings, shown)
    return training
