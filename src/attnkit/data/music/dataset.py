"""Chorales as training data: split by chorale (tunes kept together), encoded, cut into windows.

Many chorale tunes were harmonised by Bach more than once; two settings of one tune share most
of their soprano, so the split groups chorales by the first intervals of their soprano and
keeps each group in one split. Training sees every chorale in all twelve keys (transposed by
−5..+6 semitones; augmentation for training only); validation and test are left as written.

Shape legend: B batch, L window length (model input), V vocabulary.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.data.errors import DataError
from attnkit.data.music.chorales import Chorale, ChoraleSet, load_chorales
from attnkit.data.music.events import EventVocabulary
from attnkit.data.splits import split_by_key

__all__ = ["TRANSPOSITIONS", "MusicData", "MusicWindows", "eval_windows", "train_windows"]

#: the semitone shifts of the training augmentation: all twelve keys
TRANSPOSITIONS = tuple(range(-5, 7))
_TUNE_INTERVALS = 12


def tune_key(chorale: Chorale) -> tuple[int, ...]:
    """The first soprano intervals: equal for two settings of one tune, whatever their key."""
    soprano = [p for v, _, _, p in chorale.notes if v == 0]
    return tuple(b - a for a, b in itertools.pairwise(soprano))[:_TUNE_INTERVALS]


@dataclass
class MusicData:
    """The chorales of each split, their event sequences and the vocabulary.

    Attributes:
        vocab: the event vocabulary of the chosen voices.
        train, valid, test: ``(name, ids (L,))`` per chorale, untransposed.
        skipped: files that could not be parsed, with the reason.
    """

    vocab: EventVocabulary
    train: list[tuple[str, Tensor]]
    valid: list[tuple[str, Tensor]]
    test: list[tuple[str, Tensor]]
    skipped: list[tuple[str, str]]

    @classmethod
    def build(
        cls,
        chorales: ChoraleSet | None = None,
        *,
        voices: str = "satb",
        valid: float = 0.1,
        test: float = 0.1,
        seed: int = 0,
        limit: int | None = None,
    ) -> MusicData:
        """Split and encode ``chorales`` (default: music21's Bach chorales, cached).

        Args:
            voices: letters of the voices to encode (``"satb"``, ``"s"``, ...).
            valid, test: fractions of the tunes held out.
            seed: the split's seed.
            limit: keep only the first ``limit`` chorales by name (tiny runs and tests; only
                those are parsed when ``chorales`` is not given).

        Raises:
            DataError: too few chorales to split, bad fractions.
            ValueError: bad voices.
        """
        vocab = EventVocabulary.from_letters(voices)
        bad_limit = not isinstance(limit, int) or isinstance(limit, bool) or limit < 3
        if limit is not None and bad_limit:
            raise DataError(f"limit must keep at least 3 chorales to split, got {limit!r}")
        found = load_chorales(limit=limit) if chorales is None else chorales
        pieces = sorted(found.chorales, key=lambda c: c.name)
        if limit is not None:
            pieces = pieces[:limit]
        for name, fraction in (("valid", valid), ("test", test)):
            if not 0.0 < fraction < 0.5:
                raise DataError(f"{name} must be a fraction in (0, 0.5), got {fraction!r}")
        parts = split_by_key(pieces, tune_key, valid=valid, test=test, seed=seed)

        def encode(split: list[Chorale]) -> list[tuple[str, Tensor]]:
            return [(c.name, torch.tensor(vocab.encode(c), dtype=torch.long)) for c in split]

        return cls(vocab, *(encode(p) for p in parts), skipped=list(found.skipped))

    def sizes(self) -> dict[str, int]:
        """Chorales and events (targets, i.e. everything after ``<bos>``) per split."""
        out: dict[str, int] = {}
        for split in ("train", "valid", "test"):
            items = getattr(self, split)
            out[f"{split}_chorales"] = len(items)
            out[f"{split}_events"] = sum(len(ids) - 1 for _, ids in items)
        return out


@dataclass
class MusicWindows:
    """A batch of windows: ``inputs (B, L)`` and ``targets (B, L)`` (the next event; ``<pad>``
    where there is none)."""

    inputs: Tensor
    targets: Tensor

    def to(self, device: torch.device | str) -> MusicWindows:
        return MusicWindows(self.inputs.to(device), self.targets.to(device))

    @property
    def events(self) -> int:
        return int((self.targets != EventVocabulary.pad).sum())


def _window_pairs(ids: Tensor, starts: list[int], length: int) -> list[tuple[Tensor, Tensor]]:
    """``(inputs, targets)`` of ``length`` from each start (negative starts are clipped to 0
    and make a shorter window), right-padded with ``<pad>``."""
    out = []
    for start in starts:
        begin, stop = max(start, 0), start + length
        inputs = ids[begin:stop]
        targets = ids[begin + 1 : stop + 1]
        inputs = inputs[: len(targets)]  # (n,): every input has its next event
        pad = length - len(inputs)
        out.append(
            (
                torch.nn.functional.pad(inputs, (0, pad), value=EventVocabulary.pad),
                torch.nn.functional.pad(targets, (0, pad), value=EventVocabulary.pad),
            )
        )
    return out


def _batches(pairs: list[tuple[Tensor, Tensor]], batch_size: int) -> list[MusicWindows]:
    return [
        MusicWindows(
            torch.stack([p[0] for p in pairs[i : i + batch_size]]),  # (B, L)
            torch.stack([p[1] for p in pairs[i : i + batch_size]]),  # (B, L)
        )
        for i in range(0, len(pairs), batch_size)
    ]


def train_windows(
    data: MusicData,
    *,
    length: int,
    batch_size: int,
    generator: torch.Generator,
    transpose: bool = True,
) -> list[MusicWindows]:
    """One epoch of training batches: every training chorale in every key of
    :data:`TRANSPOSITIONS` (or only as written, ``transpose=False``), cut into windows of
    ``length`` events at a random phase (each event is a target exactly once), shuffled.

    Draws only from ``generator`` (so a resumed run sees the same batches).

    Raises:
        ValueError: ``length`` or ``batch_size`` < 1.
    """
    if length < 1 or batch_size < 1:
        raise ValueError(f"length and batch_size must be ≥ 1, got {length} and {batch_size}")
    pairs: list[tuple[Tensor, Tensor]] = []
    shifts = TRANSPOSITIONS if transpose else (0,)
    for _, ids in data.train:
        for semitones in shifts:
            moved = data.vocab.transpose(ids, semitones)
            if moved is None:
                continue
            phase = int(torch.randint(0, length, (1,), generator=generator))
            starts = list(range(-phase, len(ids) - 1, length))
            pairs += _window_pairs(moved, starts, length)
    order = torch.randperm(len(pairs), generator=generator).tolist()
    return _batches([pairs[i] for i in order], batch_size)


def eval_windows(
    items: list[tuple[str, Tensor]], *, length: int, batch_size: int
) -> list[MusicWindows]:
    """Consecutive windows of ``length`` events from the start of each chorale, as written:
    every event after ``<bos>`` is a target exactly once (context restarts at each window)."""
    if length < 1 or batch_size < 1:
        raise ValueError(f"length and batch_size must be ≥ 1, got {length} and {batch_size}")
    pairs: list[tuple[Tensor, Tensor]] = []
    for _, ids in items:
        pairs += _window_pairs(ids, list(range(0, len(ids) - 1, length)), length)
    return _batches(pairs, batch_size)
