"""A decoder-only Transformer language model on real text: one side of a translation data set
(by default the King James Bible of ``bible:en-es``), split by chapter as the source splits it,
cut into BPE tokens and read as one running text per split.

The model is attnkit's decoder-only Transformer (:class:`attnkit.models.MusicTransformer`,
which is specific to music only by its name) with rotary positions by default. Training
windows are ``<bos>`` followed by ``window − 1`` consecutive tokens from a random place in the
training text; validation and test windows are consecutive. The metric is the validation
negative log-likelihood per token (nats).

Shape legend: B batch, L window.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from attnkit._validate import check_positive_fields
from attnkit.data.tokenizer import Tokenizer
from attnkit.data.translation import load_pairs
from attnkit.models.music_transformer import POSITIONS, MusicTransformer, MusicTransformerConfig
from attnkit.tasks._settings import settings_from
from attnkit.training import (
    CheckpointExtras,
    StepLoss,
    TrainConfig,
    Trainer,
    TrainResult,
    load_best_checkpoint,
    model_device,
    sequence_cross_entropy,
)
from attnkit.training.parallel import shard_rows

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
        """A fresh decoder of this shape."""
        return MusicTransformer(
            MusicTransformerConfig(
                vocab_size,
                width=self.width,
                heads=self.heads,
                layers=self.layers,
                ff_dim=self.ff_dim,
                dropout=self.dropout,
                positions=self.positions,
                max_len=self.window,
            )
        )


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


@dataclass
class TextWindows:
    """A batch of windows: ``inputs (B, L)`` (``<bos>`` first) and ``targets (B, L)``."""

    inputs: Tensor
    targets: Tensor

    def to(self, device: torch.device | str) -> TextWindows:
        return TextWindows(self.inputs.to(device), self.targets.to(device))


def windows(stream: Tensor, starts: list[int], length: int, batch_size: int) -> list[TextWindows]:
    """``<bos>`` + ``stream[s : s + length − 1]`` as inputs and ``stream[s : s + length]`` as
    targets for each start ``s``, in batches."""
    bos = torch.tensor([Tokenizer.bos_id])
    pairs = [(torch.cat((bos, stream[s : s + length - 1])), stream[s : s + length]) for s in starts]
    return [
        TextWindows(
            torch.stack([p[0] for p in pairs[i : i + batch_size]]),  # (B, L)
            torch.stack([p[1] for p in pairs[i : i + batch_size]]),  # (B, L)
        )
        for i in range(0, len(pairs), batch_size)
    ]


def eval_windows(stream: Tensor, length: int, batch_size: int) -> list[TextWindows]:
    """Consecutive full windows of ``stream`` (each token a target once; the tail is left)."""
    return windows(stream, list(range(0, len(stream) - length + 1, length)), length, batch_size)


class TextTask:
    """The :class:`~attnkit.training.TrainTask` of the language model: next-token
    cross-entropy on random windows of the training text; validation NLL per token."""

    metric = "nll"
    higher_is_better = False

    def __init__(self, data: TextData, settings: TextSettings) -> None:
        self.data, self.settings = data, settings
        self.valid = eval_windows(data.valid, settings.window, settings.batch_size)

    def train_batches(self, epoch: int, generator: torch.Generator) -> list[TextWindows]:
        length = self.settings.window
        count = len(self.data.train) // length
        starts = torch.randint(0, len(self.data.train) - length, (count,), generator=generator)
        return windows(self.data.train, starts.tolist(), length, self.settings.batch_size)

    def loss(self, model: nn.Module, batch: TextWindows) -> StepLoss:
        batch = batch.to(model_device(model))
        logits = model(batch.inputs)  # (B, L, V)
        loss, tokens = sequence_cross_entropy(logits, batch.targets, pad_id=Tokenizer.pad_id)
        return StepLoss(loss, tokens)

    def shard(self, batch: TextWindows, rank: int, world: int) -> TextWindows:
        return shard_rows(batch, rank, world)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        nll = token_nll(model, self.valid)
        return {"nll": nll, "perplexity": math.exp(nll)}

    def checkpoint_extras(self) -> CheckpointExtras:
        config = dataclasses.asdict(self.settings) | {
            "task": "text-lm",
            "vocab_size": self.data.tokenizer.vocab_size,
        }
        return CheckpointExtras(config=config, tokenizer_json=self.data.tokenizer.to_json())


@torch.no_grad()
def token_nll(model: nn.Module, batches: list[TextWindows]) -> float:
    """Mean negative log-likelihood per token (nats) of ``model`` over ``batches``."""
    total, tokens = 0.0, 0
    for batch in batches:
        batch = batch.to(model_device(model))
        logits = model(batch.inputs)  # (B, L, V)
        loss, n = sequence_cross_entropy(logits, batch.targets, pad_id=Tokenizer.pad_id)
        total += float(loss) * n
        tokens += n
    if tokens == 0:
        raise ValueError("token_nll: the batches hold no tokens")
    return total / tokens


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
