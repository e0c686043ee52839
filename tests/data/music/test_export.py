"""Pieces back to music21: the MIDI and MusicXML read back (by music21) hold the same notes."""

from __future__ import annotations

import pytest

from attnkit.data.music import EventVocabulary, Piece, infer_meter, to_score
from attnkit.data.music.export import midi_bytes, musicxml_bytes
from tests.data.music._tiny import two_bar_chorale


def notes_of(score) -> list[tuple[int, float, float, int]]:
    """(part index, offset, quarter length, midi) of every note, tied notes merged."""
    out = []
    for index, part in enumerate(score.parts):
        for n in part.stripTies().flatten().notes:
            out.append((index, float(n.offset), float(n.quarterLength), n.pitch.midi))
    return sorted(out)


def expected(piece: Piece, lead: int) -> list[tuple[int, float, float, int]]:
    return sorted((v, (o + lead) / 4, d / 4, p) for v, o, d, p in piece.notes)


def test_musicxml_and_midi_round_trip(tmp_path) -> None:
    from music21 import converter

    vocab = EventVocabulary()
    piece = vocab.decode(vocab.encode(two_bar_chorale()))
    score = to_score(piece)
    assert infer_meter(piece) == "3/4"
    xml = tmp_path / "p.musicxml"
    xml.write_bytes(musicxml_bytes(score))
    back = converter.parse(str(xml), forceSource=True)
    # the quarter pickup sits at the end of a first 3/4 measure of rests: 2 quarters of lead
    assert notes_of(back) == expected(piece, lead=8)
    measures = back.parts[0].getElementsByClass("Measure")
    assert [float(m.offset) for m in measures] == [0.0, 3.0, 6.0]
    mid = tmp_path / "p.mid"
    mid.write_bytes(midi_bytes(score))
    assert notes_of(converter.parse(str(mid), forceSource=True)) == expected(piece, lead=8)


def test_meter_from_bar_spacing() -> None:
    assert infer_meter(Piece([], [0, 16, 32, 48], 64)) == "4/4"
    assert infer_meter(Piece([], [4, 16], 30)) == "3/4"
    assert infer_meter(Piece([], [], 30)) == "4/4"
    assert infer_meter(Piece([], [0, 274, 548], 600)) == "4/4"  # not a bar: no 274/16
    assert infer_meter(Piece([], [0, 6, 12], 30)) == "6/16"


def test_notes_past_the_end_are_cut_and_empty_pieces_refused() -> None:
    score = to_score(Piece([(0, 0, 32, 60)], [0], 8))
    assert notes_of(score) == [(0, 0.0, 2.0, 60)]
    with pytest.raises(ValueError, match="no notes"):
        to_score(Piece([], [0], 16))
