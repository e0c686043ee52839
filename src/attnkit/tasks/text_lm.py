"""A decoder-only Transformer language model on real text: one side of a translation data set
(by default the King James Bible of ``bible:en-es``), split by chapter as the source splits it,
cut into BPE tokens and read as one running text per split.

The model is attnkit's decoder-only Transformer (:class:`attnkit.models.MusicTransformer`,
which is specific to music only by its name) with rotary positions by default. Training
windows are ``<bos>`` followed by ``window − 1`` consecutive tokens from a random place in the
training text; validation and test windows are consecutive. Loss and metric are the music
task's (:class:`~attnkit.tasks.music.MusicTask`): next-token cross-entropy, validation negative
log-likelihood per token (nats).

Shape legend: B batch, L window.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from attnkit._validate import check_positive_fields
from attnkit.data.music import MusicWindows
from attnkit.data.tokenizer import Tokenizer
from attnkit.data.translation import load_pairs
from attnkit.models.music_transformer import POSITIONS, MusicTransformer
from attnkit.tasks._settings import settings_from
from attnkit.tasks.music import MusicSettings, MusicTask
from attnkit.training import (
    CheckpointExtras,
    TrainConfig,
    Trainer,
    TrainResult,
    load_best_checkpoint,
)

SIDES = ("source", "target")


@dataclass
class TextSettings:
    """What to train (saved in each checkpoint).

    Attributes:
        data: a translation data spec (``bible:en-es``, ``gettext:fr``, ...).
        side: which side's text to model, ``"source"`` or ``"target"``.
        vocab: BPE vocabulary size (special tokens included).
        positions: the decoder's positions (``"rope"``, ``"relative"``, ``"sinusoidal"``,
            ``"learned"``).
        window: tokens per window (``<bos>`` included).

    Raises:
        ValueError: an unknown side or positions, a non-positive size.
    """

    data: str = "bible:en-es"
    side: str = "source"
    vocab: int = 4000
    positions: str = "rope"
    width: int = 128
    heads: int = 4
    layers: int = 3
    ff_dim: int = 512
    dropout: float = 0.1
    window: int = 256
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {list(SIDES)}, got {self.side!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {list(POSITIONS)}, got {self.positions!r}")
        check_positive_fields(
            self, ("vocab", "width", "heads", "layers", "ff_dim", "window", "batch_size")
        )

    def build_model(self, vocab_size: int) -> MusicTransformer:
        """A fresh decoder of this shape (the music task's decoder, built the same way)."""
        shape = ("positions", "width", "heads", "layers", "ff_dim", "dropout", "window")
        model = MusicSettings(**{name: getattr(self, name) for name in shape}).build_model(
            vocab_size
        )
        assert isinstance(model, MusicTransformer)
        return model


@dataclass
class TextData:
    """The tokenizer and each split as one running text of token ids ``(N,)``."""

    tokenizer: Tokenizer
    train: Tensor
    valid: Tensor
    test: Tensor

    @classmethod
    def build(cls, settings: TextSettings, tokenizer: Tokenizer | None = None) -> TextData:
        """Load ``settings.data``; train the BPE tokenizer on the training text unless given."""
        splits = load_pairs(settings.data, seed=settings.seed)
        index = SIDES.index(settings.side)
        texts = {name: [pair[index] for pair in getattr(splits, name)] for name in
                 ("train", "valid", "test")}
        if tokenizer is None:
            tokenizer = Tokenizer.train(texts["train"], kind="bpe", vocab_size=settings.vocab)
        streams = {
            name: torch.tensor([i for ids in tokenizer.encode_batch(t) for i in ids])
            for name, t in texts.items()
        }
        return cls(tokenizer, streams["train"], streams["valid"], streams["test"])


def windows(stream: Tensor, starts: list[int], length: int, batch_size: int) -> list[MusicWindows]:
    """``<bos>`` + ``stream[s : s + length − 1]`` as inputs and ``stream[s : s + length]`` as
    targets for each start ``s``, in batches of ``(B, L)``."""
    bos = torch.tensor([Tokenizer.bos_id])
    pairs = [(torch.cat((bos, stream[s : s + length - 1])), stream[s : s + length]) for s in starts]
    return [
        MusicWindows(
            torch.stack([p[0] for p in pairs[i : i + batch_size]]),  # (B, L)
            torch.stack([p[1] for p in pairs[i : i + batch_size]]),  # (B, L)
        )
        for i in range(0, len(pairs), batch_size)
    ]


def eval_windows(stream: Tensor, length: int, batch_size: int) -> list[MusicWindows]:
    """Consecutive full windows of ``stream`` (each token a target once; the tail is left)."""
    return windows(stream, list(range(0, len(stream) - length + 1, length)), length, batch_size)


class TextTask(MusicTask):
    """The :class:`~attnkit.training.TrainTask` of the language model: the music task's
    next-token cross-entropy and validation NLL (per token here; both pad with id 0), on random
    windows of the training text."""

    def __init__(self, data: TextData, settings: TextSettings) -> None:
        self.text, self.text_settings = data, settings
        self.valid = eval_windows(data.valid, settings.window, settings.batch_size)

    def train_batches(self, epoch: int, generator: torch.Generator) -> list[MusicWindows]:
        length, stream = self.text_settings.window, self.text.train
        count = len(stream) // length
        starts = torch.randint(0, len(stream) - length, (count,), generator=generator)
        return windows(stream, starts.tolist(), length, self.text_settings.batch_size)

    def checkpoint_extras(self) -> CheckpointExtras:
        config = dataclasses.asdict(self.text_settings) | {
            "task": "text-lm",
            "vocab_size": self.text.tokenizer.vocab_size,
        }
        return CheckpointExtras(config=config, tokenizer_json=self.text.tokenizer.to_json())


def load_text_model(run: str | Path) -> tuple[MusicTransformer, TextSettings, TextData]:
    """A trained run's best model (eval mode), its settings and its data (tokenized with the
    saved tokenizer).

    Raises:
        FileNotFoundError: nothing there.
        ValueError: a checkpoint that is not a text language model.
    """
    checkpoint = load_best_checkpoint(run)
    task = checkpoint.task_config
    if task.get("task") != "text-lm" or checkpoint.tokenizer_json is None:
        raise ValueError(f"{checkpoint.path} is not a text language model checkpoint")
    settings = settings_from(TextSettings, task)
    data = TextData.build(settings, Tokenizer.from_json(checkpoint.tokenizer_json))
    model = settings.build_model(data.tokenizer.vocab_size)
    checkpoint.load_into(model)
    return model.eval(), settings, data


def train_text(
    settings: TextSettings, training: TrainConfig, run_dir: str | Path
) -> TrainResult:
    """Train the language model as ``settings`` and ``training`` say, into ``run_dir``."""
    data = TextData.build(settings)
    task = TextTask(data, settings)
    torch.manual_seed(settings.seed)
    model = settings.build_model(data.tokenizer.vocab_size)
    return Trainer(model, task, training, run_dir=run_dir).fit()
