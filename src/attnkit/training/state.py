"""The Trainer's own records: the resumable run state, the result, the divergence error."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnkit.training.store import CheckpointError


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/Inf; nothing of that update was applied.

    Attributes:
        step: the update (1-based) that failed.
        last_checkpoint: the last good checkpoint on disk, or ``None``.
    """

    def __init__(self, message: str, *, step: int, last_checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.last_checkpoint = last_checkpoint


@dataclass
class RunState:
    """Where a run is: saved in ``trainer_state.json`` and restored on resume.

    ``epoch`` is the epoch in progress (0-based) and ``batch_in_epoch`` how many of its
    batches were trained on; ``seconds`` is the wall time of earlier ``fit()`` calls;
    ``decay_steps`` is the schedule's length in updates (``None``: it follows the time budget).
    """

    decay_steps: int | None
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens: int = 0
    seconds: float = 0.0
    best_metric: float | None = None
    best_step: int | None = None
    last_eval_step: int | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, saved: dict[str, Any], where: Path) -> RunState:
        """Rebuild from ``trainer_state.json`` of checkpoint ``where``.

        Raises:
            CheckpointError: a field is missing (naming the fields and the checkpoint).
        """
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in saved]
        if missing:
            raise CheckpointError(f"{where}/trainer_state.json lacks {missing}: cannot resume")
        return cls(**{name: saved[name] for name in names})

    def improves(self, value: float, higher_is_better: bool) -> bool:
        """Whether ``value`` beats the best metric so far."""
        if self.best_metric is None:
            return True
        return value > self.best_metric if higher_is_better else value < self.best_metric


@dataclass
class TrainResult:
    """What ``fit()`` did.

    Attributes:
        steps: updates made in total (resumed ones included).
        epochs: epochs completed.
        tokens: tokens (or examples) trained on in total.
        seconds: wall time the run has trained in total, the time before a resume included
            (as ``steps`` and ``tokens`` count the updates before it).
        stop_reason: ``"epochs"``, ``"max_steps"`` or ``"time"``.
        metric: the task's deciding metric; ``best_metric`` its best value, at ``best_step``.
        final_metrics: the last evaluation.
        history: train windows and evaluations, oldest first (``"split"`` tells which).
        last_checkpoint, best_checkpoint: checkpoint directories (``None`` without a run_dir).
        resumed_from: the checkpoint this run continued, if any.
    """

    steps: int
    epochs: int
    tokens: int
    seconds: float
    stop_reason: str
    metric: str
    best_metric: float | None
    best_step: int | None
    final_metrics: dict[str, float]
    history: list[dict[str, Any]]
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    resumed_from: Path | None
