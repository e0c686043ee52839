"""The event encoding of a chorale: pitch, duration and time shift (Huang et al. 2018 style).

A piece is read left to right on the sixteenth grid. At each moment where something happens:

- ``|`` if a full measure starts there,
- then each note starting there, top voice first: its pitch ``S:G4`` (voice and MIDI pitch)
  followed by its duration ``d4`` (in sixteenths, 1..32);
- then ``+n``: move time forward by ``n`` sixteenths (1..16; longer gaps take several).

A sequence is ``<bos> events... <eos>``; ids ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2 (the ids every
attnkit model uses). Pitch ids of one voice are contiguous, so transposing a sequence by ``k``
semitones adds ``k`` to its pitch ids (:meth:`EventVocabulary.transpose`).

Shape legend: L sequence length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.data.errors import DataError
from attnkit.data.music.chorales import VOICES, Chorale

__all__ = ["MAX_DURATION", "MAX_SHIFT", "PITCH_RANGE", "EventVocabulary", "Piece"]

#: longest time shift token, in sixteenths (one 4/4 bar)
MAX_SHIFT = 16
#: longest duration token, in sixteenths (two 4/4 bars; longer notes are clipped to it)
MAX_DURATION = 32
#: MIDI pitches every voice can hold: the chorales span 36..81, ±6 for the transpositions
PITCH_RANGE = (28, 90)
_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


def pitch_name(midi: int) -> str:
    """``60 -> "C4"``."""
    return f"{_NAMES[midi % 12]}{midi // 12 - 1}"


@dataclass(frozen=True)
class Piece:
    """Notes decoded from events: ``(voice, onset, duration, pitch)`` (steps), bar onsets, end."""

    notes: list[tuple[int, int, int, int]]
    bars: list[int]
    end: int


class EventVocabulary:
    """The event ids of the chosen voices.

    Args:
        voices: indexes into :data:`VOICES` (``(0, 1, 2, 3)`` for all four, ``(0,)`` for the
            soprano alone), top voice first.

    Raises:
        ValueError: an empty, repeated or unknown voice.
    """

    pad, bos, eos, bar = 0, 1, 2, 3

    def __init__(self, voices: Sequence[int] = (0, 1, 2, 3)) -> None:
        voices = tuple(voices)
        if not voices or len(set(voices)) != len(voices) or any(
            v not in range(len(VOICES)) for v in voices
        ):
            raise ValueError(f"voices must be distinct indexes into {VOICES}, got {voices!r}")
        self.voices = tuple(sorted(voices))
        self.shift_base = 4  # +1 .. +MAX_SHIFT
        self.duration_base = self.shift_base + MAX_SHIFT  # d1 .. dMAX_DURATION
        self.pitch_base = self.duration_base + MAX_DURATION
        self.pitches_per_voice = PITCH_RANGE[1] - PITCH_RANGE[0] + 1
        self.size = self.pitch_base + len(self.voices) * self.pitches_per_voice

    @classmethod
    def from_letters(cls, letters: str) -> EventVocabulary:
        """``"satb"`` (all four voices), ``"s"`` (soprano alone), ``"sb"``, ...

        Raises:
            ValueError: a letter that is not one of s, a, t, b.
        """
        if not isinstance(letters, str) or not letters:
            raise ValueError(f"voices must be letters from 'satb', got {letters!r}")
        index = {name[0]: i for i, name in enumerate(VOICES)}
        unknown = [c for c in letters.lower() if c not in index]
        if unknown:
            raise ValueError(f"voices must be letters from 'satb', got {letters!r}")
        return cls([index[c] for c in letters.lower()])

    def __len__(self) -> int:
        return self.size

    # -- ids ------------------------------------------------------------------------------

    def shift_id(self, steps: int) -> int:
        return self.shift_base + steps - 1

    def duration_id(self, steps: int) -> int:
        return self.duration_base + min(steps, MAX_DURATION) - 1

    def pitch_id(self, voice: int, midi: int) -> int:
        """The id of ``midi`` sung by ``voice``. Raises ``DataError`` outside the range."""
        if not PITCH_RANGE[0] <= midi <= PITCH_RANGE[1]:
            raise DataError(f"pitch {midi} is outside the encodable range {PITCH_RANGE}")
        slot = self.voices.index(voice)
        return self.pitch_base + slot * self.pitches_per_voice + midi - PITCH_RANGE[0]

    def kind(self, token: int) -> str:
        """``"special"``, ``"bar"``, ``"shift"``, ``"duration"`` or ``"pitch"``."""
        if token < self.bar:
            return "special"
        if token == self.bar:
            return "bar"
        if token < self.duration_base:
            return "shift"
        if token < self.pitch_base:
            return "duration"
        if token < self.size:
            return "pitch"
        raise ValueError(f"token {token} is outside the vocabulary of {self.size} events")

    def name(self, token: int) -> str:
        """A readable name: ``<bos>``, ``|``, ``+4``, ``d8``, ``S:G4``."""
        kind = self.kind(token)
        if kind == "special":
            return ("<pad>", "<bos>", "<eos>")[token]
        if kind == "bar":
            return "|"
        if kind == "shift":
            return f"+{token - self.shift_base + 1}"
        if kind == "duration":
            return f"d{token - self.duration_base + 1}"
        slot, offset = divmod(token - self.pitch_base, self.pitches_per_voice)
        return f"{VOICES[self.voices[slot]][0].upper()}:{pitch_name(offset + PITCH_RANGE[0])}"

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, chorale: Chorale) -> list[int]:
        """``<bos> events <eos>`` of the chosen voices of ``chorale``.

        Raises:
            DataError: a pitch outside :data:`PITCH_RANGE` (the chorale is named).
        """
        notes = [n for n in chorale.notes if n[0] in self.voices]
        starts: dict[int, list[tuple[int, int, int]]] = {}
        for voice, onset, duration, pitch in notes:
            starts.setdefault(onset, []).append((voice, duration, pitch))
        bars = {b for b in chorale.bars if b < chorale.end}
        ids = [self.bos]
        now = 0
        try:
            for moment in sorted(set(starts) | bars):
                ids += self._shift(moment - now)
                now = moment
                if moment in bars:
                    ids.append(self.bar)
                for voice, duration, pitch in sorted(starts.get(moment, [])):
                    ids += [self.pitch_id(voice, pitch), self.duration_id(duration)]
        except DataError as error:
            raise DataError(f"{chorale.name}: {error}") from None
        ids += self._shift(chorale.end - now)
        ids.append(self.eos)
        return ids

    def _shift(self, steps: int) -> list[int]:
        full, rest = divmod(steps, MAX_SHIFT)
        return [self.shift_id(MAX_SHIFT)] * full + ([self.shift_id(rest)] if rest else [])

    def transpose(self, ids: Tensor, semitones: int) -> Tensor | None:
        """``ids (L,)`` moved by ``semitones``; ``None`` when a pitch would leave the range
        of its voice."""
        pitch = ids >= self.pitch_base  # (L,)
        if not semitones or not bool(pitch.any()):
            return ids.clone()
        offset = (ids[pitch] - self.pitch_base) % self.pitches_per_voice + semitones
        if int(offset.min()) < 0 or int(offset.max()) >= self.pitches_per_voice:
            return None
        return torch.where(pitch, ids + semitones, ids)

    def decode(self, ids: Sequence[int]) -> Piece:
        """Notes back from events (the inverse of :meth:`encode` up to clipped durations).

        Lenient with what a model samples: a pitch without its duration lasts a quarter
        note, a stray duration is ignored, and a voice's note is cut where the voice's next
        note starts. Decoding stops at ``<eos>``.
        """
        notes: list[list[int]] = []
        bars: list[int] = []
        now = 0
        waiting: tuple[int, int] | None = None  # (voice, pitch) of a pitch waiting for its duration
        for token in ids:
            token = int(token)
            if token == self.eos:
                break
            kind = self.kind(token)
            if waiting is not None and kind != "duration":
                notes.append([waiting[0], now, 4, waiting[1]])
                waiting = None
            if kind == "bar":
                bars.append(now)
            elif kind == "shift":
                now += token - self.shift_base + 1
            elif kind == "duration" and waiting is not None:
                notes.append([waiting[0], now, token - self.duration_base + 1, waiting[1]])
                waiting = None
            elif kind == "pitch":
                slot, offset = divmod(token - self.pitch_base, self.pitches_per_voice)
                waiting = (self.voices[slot], offset + PITCH_RANGE[0])
        if waiting is not None:
            notes.append([waiting[0], now, 4, waiting[1]])
        notes.sort(key=lambda n: (n[1], n[0]))
        last: dict[int, list[int]] = {}
        for note in notes:  # one note at a time per voice: cut the previous one
            before = last.get(note[0])
            if before is not None and before[1] + before[2] > note[1]:
                before[2] = max(note[1] - before[1], 0)
            last[note[0]] = note
        kept = [(v, o, d, p) for v, o, d, p in notes if d > 0]
        end = max([now] + [o + d for _, o, d, _ in kept])
        return Piece(kept, bars, end)
