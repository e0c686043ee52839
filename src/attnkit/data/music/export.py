"""Decoded pieces back to music: a ``music21`` score, and its MIDI and MusicXML bytes.

The data layer writes no files of its own: callers write these bytes atomically.
"""

from __future__ import annotations

import collections
from typing import Any

from attnkit.data.music.chorales import STEPS_PER_QUARTER, VOICES
from attnkit.data.music.events import Piece

__all__ = ["infer_meter", "midi_bytes", "musicxml_bytes", "to_score"]


_LONGEST_BAR = 8 * STEPS_PER_QUARTER  # 8/4: longer "bars" are a barely trained model's noise


def infer_meter(piece: Piece) -> str:
    """The time signature that fits the most common distance between barlines:
    16 sixteenths -> ``"4/4"``, 12 -> ``"3/4"``; ``"4/4"`` when there are fewer than two bars
    or the distance is longer than 8/4 (MIDI cannot even store a numerator above 255)."""
    gaps = collections.Counter(b - a for a, b in zip(piece.bars, piece.bars[1:], strict=False))
    if not gaps:
        return "4/4"
    steps = gaps.most_common(1)[0][0]
    if steps > _LONGEST_BAR:
        return "4/4"
    if steps % STEPS_PER_QUARTER == 0 and steps > 0:
        return f"{steps // STEPS_PER_QUARTER}/4"
    return f"{steps}/16" if steps > 0 else "4/4"


def to_score(piece: Piece, *, title: str = "attnkit chorale") -> Any:
    """A ``music21.stream.Score`` with one part per voice that sings in ``piece``.

    Notes sounding past ``piece.end`` are cut there. When the piece starts with a pickup
    (notes before its first barline), rests fill the first measure so barlines fall where the
    events put them.

    Raises:
        ValueError: a piece without notes.
    """
    from music21 import instrument, metadata, meter, note, stream

    if not piece.notes:
        raise ValueError("the piece has no notes to write (the model produced only bars/rests)")
    signature = meter.TimeSignature(infer_meter(piece))
    bar_steps = round(signature.barDuration.quarterLength * STEPS_PER_QUARTER)
    first_bar = piece.bars[0] if piece.bars else 0
    lead = (bar_steps - first_bar % bar_steps) % bar_steps  # rests before a pickup
    score = stream.Score()
    score.insert(0, metadata.Metadata(title=title, composer="attnkit (after J. S. Bach)"))
    for voice in sorted({v for v, _, _, _ in piece.notes}):
        part = stream.Part(id=VOICES[voice])
        part.partName = VOICES[voice].capitalize()
        part.insert(0, getattr(instrument, VOICES[voice].capitalize())())
        part.insert(0, meter.TimeSignature(signature.ratioString))
        for v, onset, duration, pitch in piece.notes:
            length = min(duration, piece.end - onset)
            if v != voice or length <= 0:
                continue
            n = note.Note(pitch, quarterLength=length / STEPS_PER_QUARTER)
            part.insert((onset + lead) / STEPS_PER_QUARTER, n)
        score.insert(0, part)
    return score


def midi_bytes(score: Any) -> bytes:
    """``score`` as the bytes of a standard MIDI file."""
    from music21.midi.translate import streamToMidiFile

    return streamToMidiFile(score).writestr()


def musicxml_bytes(score: Any) -> bytes:
    """``score`` as MusicXML bytes (measures, ties and rests are made by music21)."""
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    return GeneralObjectExporter(score).parse()
