"""The lines a training run starts with: what it trains on, with what, where, for how long.

Printed by the Trainer before the first update (on the main process), so the budget,
threads and checkpoint folder are known before any time is spent.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from attnkit import _threads
from attnkit.training.config import TrainConfig
from attnkit.training.schedule import time_budget
from attnkit.training.task import model_device


def budget_text(config: TrainConfig) -> str:
    """``"10 min"``, ``"800 updates or 2.5 min, whichever comes first"``, ``"3 epochs"``..."""
    parts = []
    if config.max_steps is not None:
        parts.append(f"{config.max_steps:,} updates")
    if config.epochs is not None:
        parts.append(f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}")
    if config.minutes is not None:
        parts.append(f"{config.minutes:g} min")
    text = " or ".join(parts)
    return text + (", whichever comes first" if len(parts) > 1 else "")


def schedule_text(config: TrainConfig, decay_steps: int | None) -> str:
    """How the learning rate moves, in words."""
    if decay_steps is not None and time_budget(config) is not None:
        over = f"over {decay_steps:,} updates or the time budget, whichever ends first"
    elif decay_steps is not None:
        over = f"over {decay_steps:,} updates"
    else:
        over = "over the time budget"
    floor = config.lr * config.min_lr_ratio
    return (
        f"learning rate {config.lr:g}: {config.warmup_steps} warm-up updates, then cosine "
        f"decay to {floor:g} {over}"
    )


def header_lines(
    *,
    model: nn.Module,
    description: str | None,
    config: TrainConfig,
    run_dir: Path | None,
    decay_steps: int | None,
    world: int = 1,
) -> list[str]:
    """The header: data, model size and device, threads, budget and schedule, checkpoints."""
    parameters = sum(p.numel() for p in model.parameters())
    processes = f" x {world} processes (data-parallel)" if world > 1 else ""
    if run_dir is None:
        where = "none (no run folder)"
    else:
        where = f"{run_dir}/ (Ctrl-C saves one and prints the command that resumes)"
    lines = [
        f"model:       {type(model).__name__}, {parameters:,} parameters, on "
        f"{model_device(model)}{processes}",
        f"threads:     {_threads.describe()}",
        f"budget:      {budget_text(config)}; {schedule_text(config, decay_steps)}",
        f"checkpoints: {where}",
    ]
    if description:
        lines.insert(0, f"data:        {description}")
    return lines
