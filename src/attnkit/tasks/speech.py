"""Speech recognition with attention: Listen, Attend and Spell with location-aware attention.

``train_recognizer(settings, training, run_dir)`` synthesises (or reads) the speech of a data
spec (``espeak:mixed``, ``folder:PATH``; see :mod:`attnkit.data.speech.corpus`), computes
log-mel features, trains :class:`~attnkit.models.las.LAS` on characters with the one Trainer
and keeps the checkpoint with the best validation CER. :class:`Transcriber` loads a run and
transcribes WAV files (greedy or beam search), scores WER/CER with ``jiwer`` and shows the
alignment of the characters over the time frames.

Shape legend: B batch, T feature frames, M mel channels, S encoder states, L characters.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.data.speech import (
    DEFAULT_SPEECH_SPEC,
    FeatureConfig,
    FeatureSet,
    SpeechBatch,
    SpeechSplits,
    collate_speech,
    file_features,
    load_features,
    load_speech,
    speech_batches,
)
from attnkit.data.speech.corpus import espeak_vocabulary
from attnkit.data.tokenizer import Tokenizer
from attnkit.models import beam_search, greedy
from attnkit.models.las import LAS, LASConfig
from attnkit.tasks._settings import settings_from
from attnkit.tasks.metrics import recognition_scores
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

TASK_NAME = "speech"
# Decoding stops after this many characters per second of audio (fast speech is ~20).
_MAX_CHARACTERS_PER_SECOND = 30


@dataclass
class SpeechSettings:
    """What to train: data, features, model shape and batching (saved in each checkpoint).

    The defaults are the configuration measured in ``docs/experiments.md`` (WER on held-out
    espeak-ng voices).

    Raises:
        ValueError: a non-positive size or a bad ``label_smoothing``.
    """

    data: str = DEFAULT_SPEECH_SPEC
    listener_dim: int = 192
    listener_layers: int = 2
    speller_dim: int = 192
    embed_dim: int = 64
    attention_dim: int = 64
    location_channels: int = 10
    location_kernel: int = 15
    dropout: float = 0.1
    batch_size: int = 32
    label_smoothing: float = 0.1
    eval_examples: int = 200
    seed: int = 0
    # 40 log-mel channels every 20 ms: with 2 pyramid layers one encoder state per 80 ms
    features: dict[str, Any] = field(
        default_factory=lambda: dataclasses.asdict(FeatureConfig(hop_length=320))
    )

    def __post_init__(self) -> None:
        for name in (
            "listener_dim",
            "listener_layers",
            "speller_dim",
            "embed_dim",
            "attention_dim",
            "location_channels",
            "location_kernel",
            "batch_size",
            "eval_examples",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        self.feature_config()  # validates the feature settings

    def feature_config(self) -> FeatureConfig:
        """The :class:`FeatureConfig` of these settings.

        Raises:
            ValueError: unknown or bad feature settings.
        """
        known = {f.name for f in dataclasses.fields(FeatureConfig)}
        unknown = sorted(set(self.features) - known)
        if unknown:
            raise ValueError(f"unknown feature settings {unknown}; known: {sorted(known)}")
        return FeatureConfig(**self.features)

    def build_model(self, vocab: int) -> LAS:
        """A fresh model of this shape for a character vocabulary of ``vocab`` ids."""
        return LAS(
            LASConfig(
                input_dim=self.feature_config().n_mels,
                vocab=vocab,
                listener_dim=self.listener_dim,
                listener_layers=self.listener_layers,
                speller_dim=self.speller_dim,
                embed_dim=self.embed_dim,
                attention_dim=self.attention_dim,
                location_channels=self.location_channels,
                location_kernel=self.location_kernel,
                dropout=self.dropout,
            )
        )


class SpeechTask:
    """The :class:`~attnkit.training.TrainTask` of speech recognition: teacher-forced character
    cross-entropy; greedy-decoded CER/WER on (part of) the validation split."""

    def __init__(
        self,
        splits: SpeechSplits,
        tokenizer: Tokenizer,
        train: FeatureSet,
        valid: FeatureSet,
        settings: SpeechSettings,
    ) -> None:
        self.splits, self.tokenizer, self.settings = splits, tokenizer, settings
        self.train, self.valid = train, valid
        self.targets = tokenizer.encode_batch(train.texts)
        self.lengths = [int(f.shape[0]) for f in train.features]
        self.metric = "cer"  # smooth where WER sits at 100 early in training
        self.higher_is_better = False
        self.description = (
            f"{splits.name}: {len(train.texts):,} training utterances, {len(valid.texts):,} "
            f"validation (held-out voices); {tokenizer.vocab_size} characters"
        )

    def train_batches(self, epoch: int, generator: torch.Generator) -> list[SpeechBatch]:
        groups = speech_batches(
            self.lengths, batch_size=self.settings.batch_size, generator=generator
        )
        return [
            collate_speech(
                [self.train.features[i] for i in g], [self.targets[i] for i in g], indices=g
            )
            for g in groups
        ]

    def loss(self, model: nn.Module, batch: SpeechBatch) -> StepLoss:
        batch = batch.to(model_device(model))
        logits = model(batch.features, batch.lengths, batch.tgt_in)  # (B, L, V)
        loss, tokens = sequence_cross_entropy(
            logits,
            batch.tgt_out,
            pad_id=Tokenizer.pad_id,
            label_smoothing=self.settings.label_smoothing,
        )
        return StepLoss(loss, tokens)

    def shard(self, batch: SpeechBatch, rank: int, world: int) -> SpeechBatch:
        """Rank ``rank``'s rows of ``batch`` for data-parallel training over ``world``
        processes (contiguous rows; see :func:`attnkit.training.parallel.shard_rows`)."""
        return shard_rows(batch, rank, world)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """CER, WER and exact match on the validation utterances; also notes the confidence
        floor of this model (the 1st percentile of their per-character log-probability),
        saved with the checkpoint (see :meth:`Transcriber.unsure`)."""
        n = self.settings.eval_examples
        transcriber = Transcriber(model, self.tokenizer, self.settings)  # type: ignore[arg-type]
        heard = transcriber.transcribe_scored(self.valid.features[:n])
        confidences = torch.tensor([confidence for _, confidence in heard])
        self.confidence_floor = float(torch.quantile(confidences, 0.01))
        return recognition_scores([text for text, _ in heard], self.valid.texts[:n])

    def checkpoint_extras(self) -> CheckpointExtras:
        config = dataclasses.asdict(self.settings) | {
            "task": TASK_NAME,
            "data_name": self.splits.name,
            "vocabulary": sorted({w for text in self.train.texts for w in text.split()}),
            "confidence_floor": getattr(self, "confidence_floor", None),
        }
        return CheckpointExtras(config=config, tokenizer_json=self.tokenizer.to_json())


@dataclass
class Alignment:
    """Where each output character looked: ``weights (L + 1, S)`` over the encoder states
    (the last row is ``</s>``); state ``j`` covers ``[j · seconds_per_state, (j + 1) · ...)``."""

    characters: list[str]
    weights: Tensor
    seconds_per_state: float

    def times(self) -> list[str]:
        """A label per encoder state: its start time in seconds."""
        return [f"{j * self.seconds_per_state:.2f}" for j in range(self.weights.shape[1])]


@dataclass
class FileResult:
    """The transcript of one file (and its features ``(T, M)``), with the model's confidence
    (mean log-probability per character), or why it could not be transcribed."""

    path: Path
    text: str | None
    error: str | None = None
    features: Tensor | None = None
    confidence: float | None = None


class Transcriber:
    """A trained speech recogniser with its character tokenizer and feature settings.

    Args:
        vocabulary: the words of its training transcripts (a model spells only what it heard:
            other words come out as the nearest it knows), when known.
        confidence_floor: the mean log-probability per character that 99 % of its validation
            utterances exceed, when known (see :meth:`unsure`).
    """

    def __init__(
        self,
        model: LAS,
        tokenizer: Tokenizer,
        settings: SpeechSettings,
        *,
        vocabulary: Sequence[str] | None = None,
        confidence_floor: float | None = None,
    ) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.features = settings.feature_config()
        self.vocabulary = None if vocabulary is None else list(vocabulary)
        self.confidence_floor = confidence_floor

    @classmethod
    def load(cls, run: str | os.PathLike[str]) -> Transcriber:
        """Load a run folder (its best checkpoint), a ``best``/``last`` pointer or a checkpoint.

        Raises:
            FileNotFoundError: nothing there.
            CheckpointError: a corrupted checkpoint (the file is named).
            ValueError: a checkpoint that is not a speech model.
        """
        checkpoint = load_best_checkpoint(run)
        task = checkpoint.task_config
        if task.get("task") != TASK_NAME or checkpoint.tokenizer_json is None:
            raise ValueError(f"{checkpoint.path} is not a speech recognition checkpoint")
        settings = settings_from(SpeechSettings, task)
        tokenizer = Tokenizer.from_json(checkpoint.tokenizer_json)
        try:
            model = LAS(LASConfig(**(checkpoint.model_config or {})))
        except TypeError as error:
            raise ValueError(f"{checkpoint.path}: bad LAS configuration: {error}") from None
        checkpoint.load_into(model)
        vocabulary = task.get("vocabulary") or espeak_vocabulary(settings.data)
        return cls(model.eval(), tokenizer, settings, vocabulary=vocabulary,
                   confidence_floor=task.get("confidence_floor"))

    def unsure(self, confidence: float) -> bool:
        """Whether a transcript's confidence is below that of 99 % of the validation
        utterances (never, when the run does not say): then the speech probably holds words
        outside the vocabulary, or a voice unlike any heard in training."""
        return self.confidence_floor is not None and confidence < self.confidence_floor

    def transcribe(
        self, features: Sequence[Tensor], *, beam: int = 1, batch_size: int = 32
    ) -> list[str]:
        """Transcripts of feature matrices ``[(T_i, M)]`` with greedy decoding (``beam=1``) or
        beam search of width ``beam``.

        Raises:
            ValueError: ``beam`` < 1 or features of the wrong width.
        """
        return [text for text, _ in self.transcribe_scored(features, beam=beam,
                                                            batch_size=batch_size)]

    @torch.no_grad()
    def transcribe_scored(
        self, features: Sequence[Tensor], *, beam: int = 1, batch_size: int = 32
    ) -> list[tuple[str, float]]:
        """:meth:`transcribe`, each transcript with its confidence: the mean log-probability
        per character (``</s>`` included; for beams, the length-normalised score).

        Raises:
            ValueError: ``beam`` < 1 or features of the wrong width.
        """
        if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
            raise ValueError(f"beam must be a positive integer, got {beam!r}")
        was_training = self.model.training
        self.model.eval()
        device = model_device(self.model)
        order = sorted(range(len(features)), key=lambda i: features[i].shape[0])
        out: dict[int, tuple[str, float]] = {}
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate_speech([features[i] for i in chunk]).to(device)
            frames = int(batch.lengths.max())
            seconds = frames * self.features.hop_length / self.features.sample_rate
            max_len = int(seconds * _MAX_CHARACTERS_PER_SECOND) + 10
            if beam == 1:
                decoded = greedy(self.model, batch.features, batch.lengths, max_len=max_len)
            else:
                decoded = beam_search(
                    self.model, batch.features, batch.lengths, beam_size=beam, max_len=max_len
                )
            for i, ids, score in zip(chunk, decoded.tokens, decoded.scores, strict=True):
                per_character = score / (len(ids) + 1) if beam == 1 else score
                out[i] = (self.tokenizer.decode(ids), per_character)
        self.model.train(was_training)
        return [out[i] for i in range(len(features))]

    def transcribe_files(
        self, paths: Sequence[str | os.PathLike[str]], *, beam: int = 1
    ) -> list[FileResult]:
        """Transcribe WAV files; a file that cannot be read gets its error (naming it) and the
        others are still transcribed."""
        results = [FileResult(Path(p), None) for p in paths]
        for result in results:
            try:
                result.features = file_features(result.path, self.features)
            except (ValueError, FileNotFoundError) as error:
                result.error = str(error)
        good = [r for r in results if r.features is not None]
        heard = self.transcribe_scored([r.features for r in good], beam=beam) if good else []  # type: ignore[misc]
        for result, (text, confidence) in zip(good, heard, strict=True):
            result.text, result.confidence = text, confidence
        return results

    def evaluate(
        self, features: Sequence[Tensor], texts: Sequence[str], *, beam: int = 1
    ) -> dict[str, float]:
        """WER, CER and exact match (percent) of the transcripts of ``features`` against
        ``texts``."""
        return recognition_scores(self.transcribe(features, beam=beam), texts)

    @torch.no_grad()
    def align(self, features: Tensor, text: str | None = None, *, beam: int = 1) -> Alignment:
        """The attention of each character of ``text`` (default: the model's own transcript)
        over the encoder states while the model reads it (teacher forcing)."""
        text = self.transcribe([features], beam=beam)[0] if text is None else text
        device = model_device(self.model)
        ids = [Tokenizer.bos_id, *self.tokenizer.encode(text)]
        src = features.unsqueeze(0).to(device)  # (1, T, M)
        lengths = torch.tensor([features.shape[0]], device=device)
        _, weights = self.model.teacher_forced(
            src, lengths, torch.tensor([ids], device=device)
        )  # (1, L + 1, S)
        per_state = (2**self.model.config.listener_layers) * self.features.hop_length
        return Alignment(
            characters=[*self.tokenizer.tokens(text), "</s>"],
            weights=weights[0].cpu(),
            seconds_per_state=per_state / self.features.sample_rate,
        )

    def plot_alignment(
        self, alignment: Alignment, path: str | os.PathLike[str], *, title: str | None = None
    ) -> Path:
        """Draw ``alignment`` (characters down, time along) as a PNG at ``path``."""
        from attnkit.explain import plot_heatmap

        return plot_heatmap(
            alignment.weights,
            path,
            tokens=alignment.characters,
            key_tokens=alignment.times(),
            title=title,
            query_label="character",
            key_label="time (s, start of each state)",
            annotate=False,
        )


def prepare(settings: SpeechSettings, *, progress: bool = True) -> tuple[SpeechTask, LAS]:
    """Load (synthesise) the data, compute features, train the character tokenizer on the
    training transcripts, build task and model."""
    splits = load_speech(settings.data, progress=progress)
    config = settings.feature_config()
    train = load_features(splits.train, config, progress=progress)
    valid = load_features(splits.valid[: settings.eval_examples], config, progress=progress)
    splits.problems.extend(train.problems + valid.problems)
    tokenizer = Tokenizer.train(train.texts, kind="char")
    task = SpeechTask(splits, tokenizer, train, valid, settings)
    torch.manual_seed(settings.seed)
    return task, settings.build_model(tokenizer.vocab_size)


def train_recognizer(
    settings: SpeechSettings,
    training: TrainConfig,
    run_dir: str | os.PathLike[str] | None,
    *,
    resume: bool = False,
    progress: bool = True,
) -> tuple[TrainResult, Transcriber, SpeechTask]:
    """Train as ``settings`` and ``training`` say; return the result, the best model and the
    task (its ``splits`` hold the test utterances and any skipped-file problems)."""
    task, model = prepare(settings, progress=progress)
    result = Trainer(model, task, training, run_dir=run_dir).fit(resume=resume)
    if run_dir is not None and result.best_checkpoint is not None:
        return result, Transcriber.load(result.best_checkpoint), task
    return result, Transcriber(model.eval(), task.tokenizer, settings), task
