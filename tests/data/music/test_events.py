"""The event encoding: exact events of a hand-made chorale, decoding, transposition."""

from __future__ import annotations

import pytest
import torch

from attnkit.data.errors import DataError
from attnkit.data.music import Chorale, EventVocabulary
from attnkit.data.music.events import MAX_DURATION, PITCH_RANGE
from tests.data.music._tiny import tiny_chorales, two_bar_chorale

EXPECTED = (
    "<bos> S:G4 d4 A:D4 d4 T:B3 d4 B:G2 d4 +4 "
    "| S:A4 d8 A:E4 d4 T:C4 d12 B:A2 d12 +4 "
    "A:D4 d4 +4 "
    "S:B4 d4 A:F#4 d4 +4 "
    "| S:C5 d12 A:G4 d12 T:E4 d12 B:C3 d12 +12 <eos>"
)


def names(vocab: EventVocabulary, ids) -> str:
    return " ".join(vocab.name(int(i)) for i in ids)


def test_four_voice_events_of_a_hand_made_chorale() -> None:
    vocab = EventVocabulary()
    assert names(vocab, vocab.encode(two_bar_chorale())) == EXPECTED


def test_soprano_alone() -> None:
    vocab = EventVocabulary.from_letters("s")
    want = "<bos> S:G4 d4 +4 | S:A4 d8 +8 S:B4 d4 +4 | S:C5 d12 +12 <eos>"
    assert names(vocab, vocab.encode(two_bar_chorale())) == want
    assert vocab.size == 4 + 16 + MAX_DURATION + (PITCH_RANGE[1] - PITCH_RANGE[0] + 1)


def test_decode_inverts_encode_on_real_chorales() -> None:
    vocab = EventVocabulary()
    for chorale in [two_bar_chorale(), *tiny_chorales().chorales]:
        piece = vocab.decode(vocab.encode(chorale))
        clipped = [(v, o, min(d, MAX_DURATION), p) for v, o, d, p in chorale.notes]
        assert sorted(piece.notes) == sorted(clipped), chorale.name
        assert piece.bars == [b for b in chorale.bars if b < chorale.end]
        assert piece.end == chorale.end


def test_long_gaps_take_several_shifts() -> None:
    chorale = Chorale("test/gap", notes=((0, 0, 4, 60), (0, 40, 4, 62)), bars=(), end=44)
    vocab = EventVocabulary.from_letters("s")
    assert names(vocab, vocab.encode(chorale)) == "<bos> S:C4 d4 +16 +16 +8 S:D4 d4 +4 <eos>"


def test_transposing_ids_equals_encoding_the_transposed_chorale() -> None:
    vocab = EventVocabulary.from_letters("s")
    ids = torch.tensor(vocab.encode(two_bar_chorale()))
    up = vocab.transpose(ids, 3)
    assert up is not None
    assert up.tolist() == vocab.encode(two_bar_chorale(shift=3))
    assert vocab.transpose(ids, PITCH_RANGE[1] - 71) is None  # C5 + that leaves the range


def test_decode_is_lenient_with_sampled_nonsense() -> None:
    vocab = EventVocabulary.from_letters("sa")
    s, a = vocab.pitch_id(0, 60), vocab.pitch_id(1, 55)
    ids = [vocab.bos, vocab.duration_id(4), s, a, vocab.duration_id(8), s,
           vocab.duration_id(8), vocab.shift_id(2), s, vocab.duration_id(4), vocab.eos, s]
    piece = vocab.decode(ids)
    # the stray d4 is ignored; the first S:C4 has no duration (a quarter, 4) and is cut to
    # nothing by the second S:C4 at the same onset; that one (d8) is cut at the soprano's next
    # note two steps later; nothing after <eos> is read
    assert piece.notes == [(0, 0, 2, 60), (1, 0, 8, 55), (0, 2, 4, 60)]
    assert piece.end == 8


def test_bad_voices_and_pitches_raise() -> None:
    with pytest.raises(ValueError, match="satb"):
        EventVocabulary.from_letters("sx")
    with pytest.raises(ValueError, match="distinct"):
        EventVocabulary([0, 0])
    with pytest.raises(DataError, match="outside"):
        EventVocabulary().pitch_id(0, 120)
    high = Chorale("test/high", notes=((0, 0, 4, 100),), bars=(), end=4)
    with pytest.raises(DataError, match="test/high"):
        EventVocabulary().encode(high)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        EventVocabulary().name(10_000)
