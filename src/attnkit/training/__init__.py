"""The one Trainer, its checkpoints, and the losses every sequence task shares.

Usage::

    from attnkit.training import Trainer, TrainConfig
    result = Trainer(model, task, TrainConfig(epochs=10), run_dir="runs/copy").fit()
    ckpt = load_checkpoint("runs/copy/best"); ckpt.load_into(model)
"""

from attnkit.training.checkpoint import (
    Checkpoint,
    load_best_checkpoint,
    load_checkpoint,
    model_config,
    save_checkpoint,
)
from attnkit.training.config import TrainConfig
from attnkit.training.interrupt import TrainingInterrupted
from attnkit.training.losses import sequence_cross_entropy
from attnkit.training.ranks import is_main_process
from attnkit.training.rng import epoch_generator
from attnkit.training.schedule import WarmupCosine, build_optimizer
from attnkit.training.state import TrainingDiverged, TrainResult
from attnkit.training.store import CheckpointError
from attnkit.training.task import CheckpointExtras, StepLoss, TrainTask, model_device
from attnkit.training.trainer import Trainer

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointExtras",
    "StepLoss",
    "TrainConfig",
    "TrainResult",
    "TrainTask",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "WarmupCosine",
    "build_optimizer",
    "epoch_generator",
    "is_main_process",
    "load_best_checkpoint",
    "load_checkpoint",
    "model_config",
    "model_device",
    "save_checkpoint",
    "sequence_cross_entropy",
]
