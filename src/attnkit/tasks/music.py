"""Music generation with relative attention (Music Transformer, Huang et al. 2018).

``train_music(settings, training, run_dir)`` trains an event language model on the Bach
chorales with the one Trainer: the Music Transformer (``positions="relative"``), the same
decoder with absolute positions (``"sinusoidal"``/``"learned"``), or an LSTM without attention.
The metric is the validation negative log-likelihood per event (nats, lower is better);
:func:`unigram_nll` is the trivial baseline. :class:`Composer` loads a run and samples a piece
(KV-cached), writes it as MIDI and MusicXML, and pictures the attention over it.

Shape legend: B batch, L events, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from attnkit._validate import check_positive_fields
from attnkit.data.music import (
    TRANSPOSITIONS,
    EventVocabulary,
    MusicData,
    MusicWindows,
    Piece,
    eval_windows,
    midi_bytes,
    musicxml_bytes,
    to_score,
    train_windows,
)
from attnkit.layers import CachePolicy
from attnkit.models.decoding import filter_logits
from attnkit.models.music_transformer import (
    POSITIONS,
    MusicLSTM,
    MusicLSTMConfig,
    MusicTransformer,
    MusicTransformerConfig,
    build_music_model,
)
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

MODEL_KINDS = ("transformer", "lstm")


@dataclass
class MusicSettings:
    """What to train: voices, model and batching (saved in each checkpoint).

    Attributes:
        model: ``"transformer"`` or ``"lstm"`` (no attention).
        positions: the Transformer's positions: ``"relative"`` (Music Transformer),
            ``"sinusoidal"`` or ``"learned"``.
        voices: the voices to encode, ``"satb"`` or e.g. ``"s"`` (soprano alone).
        window: events per training window (and the relative model's distance range).
        transpose: augment training with all twelve keys.
        limit: keep only this many chorales (tiny runs and tests); ``None`` for all.

    Raises:
        ValueError: an unknown model/positions/voices, a non-positive size.
    """

    model: str = "transformer"
    positions: str = "relative"
    voices: str = "satb"
    width: int = 128
    heads: int = 4
    layers: int = 3
    ff_dim: int = 512
    dropout: float = 0.1
    window: int = 256
    batch_size: int = 16
    transpose: bool = True
    limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {list(MODEL_KINDS)}, got {self.model!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {list(POSITIONS)}, got {self.positions!r}")
        EventVocabulary.from_letters(self.voices)
        check_positive_fields(
            self, ("width", "heads", "layers", "ff_dim", "window", "batch_size")
        )

    def build_model(self, vocab_size: int) -> nn.Module:
        """A fresh model of this shape."""
        if self.model == "lstm":
            return MusicLSTM(
                MusicLSTMConfig(
                    vocab_size, width=self.width, layers=self.layers, dropout=self.dropout
                )
            )
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

    def data(self) -> MusicData:
        """The chorales split and encoded as these settings say."""
        return MusicData.build(voices=self.voices, seed=self.seed, limit=self.limit)


@torch.no_grad()
def event_nll(model: nn.Module, windows: list[MusicWindows]) -> float:
    """Mean negative log-likelihood per event (nats) of ``model`` over ``windows``."""
    total, events = 0.0, 0
    for batch in windows:
        batch = batch.to(model_device(model))
        logits = model(batch.inputs)  # (B, L, V)
        loss, n = sequence_cross_entropy(logits, batch.targets, pad_id=EventVocabulary.pad)
        total += float(loss) * n
        events += n
    if events == 0:
        raise ValueError("event_nll: the windows hold no events")
    return total / events


def unigram_nll(data: MusicData, split: str = "valid", *, transpose: bool = True) -> float:
    """The trivial baseline: each event drawn from the training frequencies (add-one
    smoothed over every event that can follow ``<bos>``); NLL per event (nats) on ``split``.

    Raises:
        ValueError: ``split`` not one of train, valid, test.
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    vocab = data.vocab
    counts = torch.ones(vocab.size, dtype=torch.float64)
    counts[[vocab.pad, vocab.bos]] = 0.0
    for _, ids in data.train:
        for semitones in TRANSPOSITIONS if transpose else (0,):
            moved = vocab.transpose(ids, semitones)
            if moved is not None:
                counts += torch.bincount(moved[1:], minlength=vocab.size).double()
    log_p = (counts / counts.sum()).log()
    targets = torch.cat([ids[1:] for _, ids in getattr(data, split)])
    return float(-log_p[targets].mean())


class MusicTask:
    """The :class:`~attnkit.training.TrainTask` of music: next-event cross-entropy on windows of
    the (transposed) training chorales; validation NLL per event as the metric."""

    metric = "nll"
    higher_is_better = False

    def __init__(self, data: MusicData, settings: MusicSettings) -> None:
        self.data, self.settings = data, settings
        sizes = data.sizes()
        self.description = (
            f"Bach chorales (music21): {sizes['train_chorales']} training chorales "
            f"({sizes['train_events']:,} events{', x12 keys' if settings.transpose else ''}), "
            f"{sizes['valid_chorales']} validation; {settings.voices.upper()} voices"
        )
        self.valid = eval_windows(
            data.valid, length=settings.window, batch_size=settings.batch_size
        )

    def train_batches(self, epoch: int, generator: torch.Generator) -> list[MusicWindows]:
        return train_windows(
            self.data,
            length=self.settings.window,
            batch_size=self.settings.batch_size,
            generator=generator,
            transpose=self.settings.transpose,
        )

    def loss(self, model: nn.Module, batch: MusicWindows) -> StepLoss:
        batch = batch.to(model_device(model))
        logits = model(batch.inputs)  # (B, L, V)
        loss, events = sequence_cross_entropy(logits, batch.targets, pad_id=EventVocabulary.pad)
        return StepLoss(loss, events)

    def shard(self, batch: MusicWindows, rank: int, world: int) -> MusicWindows:
        """Rank ``rank``'s rows of ``batch`` for data-parallel training over ``world``
        processes (contiguous rows; see :func:`attnkit.training.parallel.shard_rows`)."""
        return shard_rows(batch, rank, world)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        nll = event_nll(model, self.valid)
        return {"nll": nll, "bits": nll / math.log(2)}

    def checkpoint_extras(self) -> CheckpointExtras:
        config = dataclasses.asdict(self.settings) | {
            "task": "music",
            "vocab_size": self.data.vocab.size,
        }
        return CheckpointExtras(config=config)


@dataclass
class Generated:
    """A sampled piece: its event ids (``<bos>`` first), the decoded notes, why sampling
    stopped (``"bars"``, ``"eos"`` or ``"max_events"``) and the seed that repeats it."""

    ids: list[int]
    piece: Piece
    stopped: str
    seed: int


class Composer:
    """A trained music model with its vocabulary: samples, scores and draws pieces."""

    def __init__(self, model: nn.Module, settings: MusicSettings) -> None:
        self.model, self.settings = model, settings
        self.vocab = EventVocabulary.from_letters(settings.voices)

    @classmethod
    def load(cls, run: str | Path) -> Composer:
        """Load a run folder (its best checkpoint), a ``best``/``last`` pointer or a checkpoint.

        Raises:
            FileNotFoundError: nothing there.
            CheckpointError: a corrupted checkpoint.
            ValueError: a checkpoint that is not a music model.
        """
        checkpoint = load_best_checkpoint(run)
        task = checkpoint.task_config
        if task.get("task") != "music":
            raise ValueError(f"{checkpoint.path} is not a music checkpoint (attnkit train music)")
        settings = settings_from(MusicSettings, task)
        vocab_size = EventVocabulary.from_letters(settings.voices).size
        if task.get("vocab_size") != vocab_size:
            raise ValueError(
                f"{checkpoint.path} was trained with {task.get('vocab_size')} events for voices "
                f"{settings.voices!r}, but this attnkit encodes them with {vocab_size}"
            )
        model = build_music_model(settings.model, checkpoint.model_config or {})
        checkpoint.load_into(model)
        return cls(model.eval(), settings)

    def _max_events(self, bars: int) -> int:
        limit = 200 * bars + 50  # ~55 events per 4/4 bar in four voices: ample
        config = getattr(self.model, "config", None)
        if getattr(config, "positions", None) == "learned":
            limit = min(limit, config.max_len)  # type: ignore[union-attr]
        return limit

    @torch.no_grad()
    def generate(
        self,
        *,
        bars: int = 8,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        max_events: int | None = None,
        cache: CachePolicy | None = None,
    ) -> Generated:
        """Sample events one at a time through the model's KV cache until ``bars`` full
        measures are done (the next barline), or ``max_events``. ``<eos>`` is not drawn before
        the last measure has started (the chorales are longer than most requests); after, it
        ends the piece. ``cache`` bounds the KV cache of every layer (constant memory however
        long the piece) and says what it evicts.

        Raises:
            ValueError: ``bars`` < 1, ``temperature`` ≤ 0, ``top_k`` < 1, a ``cache`` for an
                LSTM.
        """
        if isinstance(bars, bool) or not isinstance(bars, int) or bars < 1:
            raise ValueError(f"bars must be a positive integer, got {bars!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be ≥ 1, got {top_k}")
        seed = secrets.randbits(31) if seed is None else seed  # the global RNGs stay untouched
        device = model_device(self.model)
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        limit = max_events if max_events is not None else self._max_events(bars)
        self.model.eval()
        state = self.model.start(1, cache=cache)  # type: ignore[operator]
        ids = [self.vocab.bos]
        seen_bars, stopped = 0, "max_events"
        forbidden = torch.zeros(self.vocab.size, dtype=torch.bool, device=device)
        forbidden[[self.vocab.pad, self.vocab.bos, self.vocab.eos]] = True
        while len(ids) < limit:
            forbidden[self.vocab.eos] = seen_bars < bars
            last = torch.tensor([[ids[-1]]], device=device)  # (1, 1)
            logits = self.model.step(state, last)[:, -1].float()  # type: ignore[operator]
            logits = logits.masked_fill(forbidden, float("-inf")) / temperature  # (1, V)
            probs = filter_logits(logits, top_k=top_k).softmax(-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
            if token == self.vocab.eos:
                stopped = "eos"
                break
            if token == self.vocab.bar:
                seen_bars += 1
                if seen_bars > bars:
                    stopped = "bars"
                    break
            ids.append(token)
        return Generated(ids, self.vocab.decode(ids), stopped, seed)

    @torch.no_grad()
    def bar_attention(self, ids: list[int]) -> tuple[Tensor, list[str]]:
        """The last layer's self-attention over a piece, averaged over heads and pooled by
        measure: ``(M, M)`` where row ``a`` is how much the events of measure ``a`` attend to
        each measure (rows sum to 1), and the measure labels (``"pickup"``, ``"bar 1"``, ...).

        Raises:
            ValueError: a model without attention (the LSTM).
        """
        from attnkit.explain import record

        if not isinstance(self.model, MusicTransformer):
            raise ValueError("an LSTM has no attention to show; train a transformer")
        if len(ids) < 2 or ids[0] != self.vocab.bos:
            raise ValueError(f"ids must be <bos> and at least one event, got {len(ids)} ids")
        layer = f"blocks.{len(self.model.blocks) - 1}.self_attn"
        x = torch.tensor([ids], device=model_device(self.model))  # (1, L)
        with record(self.model, include=[layer]) as rec:
            self.model(x)
        weights = rec.single(layer)[0].mean(0).double()  # (L, L): query event x key event
        is_bar = torch.tensor([t == self.vocab.bar for t in ids], dtype=torch.long)  # (L,)
        segment = is_bar.cumsum(0)  # (L,): measure of each event (0 = before the first barline)
        count = int(segment.max()) + 1
        pooled_keys = torch.zeros(len(ids), count, dtype=torch.float64)
        pooled_keys.index_add_(1, segment, weights.cpu())  # (L, M)
        rows = torch.zeros(count, count, dtype=torch.float64)
        rows.index_add_(0, segment, pooled_keys)  # (M, M)
        sizes = torch.bincount(segment, minlength=count).double().unsqueeze(1)  # (M, 1)
        labels = ["pickup" if ids[1] != self.vocab.bar else "start"] + [
            f"bar {i}" for i in range(1, count)
        ]
        return rows / sizes, labels

    def write(self, generated: Generated, out: str | Path) -> dict[str, Path]:
        """Write ``out`` (``.mid``), the MusicXML beside it (``.musicxml``) and, for a
        Transformer, the attention picture (``.attention.png``); returns the paths.

        Raises:
            ValueError: ``out`` not ending in ``.mid``/``.midi``, a piece without notes.
        """
        from attnkit.explain import plot_heatmap
        from attnkit.explain._files import write_atomic

        path = midi_path(out)
        score = to_score(generated.piece)
        written = {
            "midi": write_atomic(path, midi_bytes(score)),
            "musicxml": write_atomic(path.with_suffix(".musicxml"), musicxml_bytes(score)),
        }
        if isinstance(self.model, MusicTransformer):
            weights, labels = self.bar_attention(generated.ids)
            written["attention"] = plot_heatmap(
                weights,
                path.with_suffix(".attention.png"),
                tokens=labels,
                title=f"last layer's attention by measure ({self.settings.positions})",
                query_label="events of measure",
                key_label="attended measure",
            )
        return written


def midi_path(out: str | Path) -> Path:
    """``out`` as the path of a MIDI file. Raises ``ValueError`` for another suffix or a
    folder."""
    path = Path(out)
    if path.suffix.lower() not in (".mid", ".midi"):
        raise ValueError(f"--out must name a .mid file, got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"--out names a folder, not a file: {str(path)!r}")
    return path


def prepare(settings: MusicSettings) -> tuple[MusicTask, nn.Module]:
    """Load and split the chorales, build the task and a fresh model."""
    data = settings.data()
    task = MusicTask(data, settings)
    torch.manual_seed(settings.seed)
    return task, settings.build_model(data.vocab.size)


def train_music(
    settings: MusicSettings,
    training: TrainConfig,
    run_dir: str | Path | None,
    *,
    resume: bool = False,
) -> tuple[TrainResult, Composer, MusicTask]:
    """Train as ``settings`` and ``training`` say; return the result, the best model and the
    task (its data serve the test split and the baselines)."""
    task, model = prepare(settings)
    result = Trainer(model, task, training, run_dir=run_dir).fit(resume=resume)
    if run_dir is not None and result.best_checkpoint is not None:
        return result, Composer.load(result.best_checkpoint), task
    return result, Composer(model.eval(), settings), task
