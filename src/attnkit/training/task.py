"""What a task gives the Trainer: batches, a loss, an evaluation, and what to save.

The Trainer knows nothing about any model or application; a task (translation, captioning,
speech, music, ...) implements :class:`TrainTask` and the Trainer does the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters): where a
    task moves its batches, so the code follows the model onto CUDA when a user puts it there."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


@dataclass
class StepLoss:
    """The loss of one batch.

    Attributes:
        loss: scalar tensor ``()`` with a graph: the mean loss per token (or per example).
        tokens: how many tokens (or examples) ``loss`` averages over; drives tokens/s and the
            token-weighted running loss in the logs.
        extra: more floats to log for this batch (e.g. ``{"accuracy": 0.9}``).
    """

    loss: Tensor
    tokens: int
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class CheckpointExtras:
    """What a task saves beside the weights.

    Attributes:
        config: JSON-able task settings (vocabulary sizes, language pair, ...), written to
            ``config.json`` under ``"task"``.
        tokenizer_json: the tokenizer as JSON text (``tokenizers.Tokenizer.to_str()``), written
            to ``tokenizer.json``; ``None`` when the task has none.
    """

    config: dict[str, Any] = field(default_factory=dict)
    tokenizer_json: str | None = None


class TrainTask(Protocol):
    """The protocol a task implements to be trained by :class:`attnkit.training.Trainer`.

    Attributes:
        metric: the key of :meth:`evaluate`'s result that decides the best checkpoint.
        higher_is_better: whether a larger ``metric`` is better (BLEU) or worse (loss).
        description: optional; one line on what it trains on, shown in the training header.
    """

    metric: str
    higher_is_better: bool

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]:
        """The training batches of ``epoch``, in an order drawn from ``generator`` only.

        ``generator`` is seeded from the config's seed and ``epoch``, so the same call gives
        the same batches: that is what lets a resumed run see the data a straight run saw.
        Do not draw from the global RNGs here.
        """
        ...

    def loss(self, model: nn.Module, batch: Any) -> StepLoss:
        """Run ``model`` on ``batch`` (moving it to the model's device) and return the loss."""
        ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics on the validation split (called in eval mode under ``torch.no_grad()``)."""
        ...

    def checkpoint_extras(self) -> CheckpointExtras:
        """Task settings and tokenizer to save in every checkpoint."""
        ...


TASK_MEMBERS = ("train_batches", "loss", "evaluate", "checkpoint_extras", "metric",
                "higher_is_better")


def check_task(task: object) -> None:
    """Raise ``TypeError`` naming what ``task`` lacks of :class:`TrainTask`."""
    missing = [name for name in TASK_MEMBERS if not hasattr(task, name)]
    if missing:
        raise TypeError(
            f"task {type(task).__name__} does not implement TrainTask: missing {missing}"
        )
    for name in TASK_MEMBERS[:4]:
        if not callable(getattr(task, name)):
            raise TypeError(f"task.{name} must be callable, got {type(getattr(task, name))}")
    if not isinstance(task.metric, str) or not task.metric:  # type: ignore[attr-defined]
        raise TypeError(f"task.metric must be a non-empty str, got {task.metric!r}")  # type: ignore[attr-defined]
    if not isinstance(task.higher_is_better, bool):  # type: ignore[attr-defined]
        raise TypeError(
            f"task.higher_is_better must be a bool, got {task.higher_is_better!r}"  # type: ignore[attr-defined]
        )


def check_step_loss(result: object, step: int) -> StepLoss:
    """Check what ``task.loss`` returned at update ``step``.

    Raises:
        TypeError: not a :class:`StepLoss`.
        ValueError: the loss is not a floating scalar with a graph, or ``tokens`` is bad.
    """
    if not isinstance(result, StepLoss):
        raise TypeError(
            f"task.loss must return a StepLoss, got {type(result).__name__} at step {step}"
        )
    loss = result.loss
    if not isinstance(loss, Tensor) or loss.dim() != 0 or not loss.is_floating_point():
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"StepLoss.loss must be a floating scalar tensor (), got {shape} at step {step}"
        )
    if not loss.requires_grad:
        raise ValueError(f"StepLoss.loss has no graph (requires_grad=False) at step {step}")
    if isinstance(result.tokens, bool) or not isinstance(result.tokens, int) or result.tokens < 0:
        raise ValueError(
            f"StepLoss.tokens must be an int >= 0, got {result.tokens!r} at step {step}"
        )
    return result
