"""Tests for the num2words: source (numbers in words)."""

from __future__ import annotations

from collections import Counter

import pytest

pytest.importorskip("num2words", reason="PyPI num2words is not installed")

from attnkit.data.errors import DataError
from attnkit.data.sources.num2words_source import number_pairs
from attnkit.data.translation import load_pairs

# Written by hand: German puts the units before the tens ("four-and-twenty").
GERMAN_ENGLISH = {
    7: ("sieben", "seven"),
    16: ("sechzehn", "sixteen"),
    21: ("einundzwanzig", "twenty-one"),
    24: ("vierundzwanzig", "twenty-four"),
    99: ("neunundneunzig", "ninety-nine"),
    345: ("dreihundertfünfundvierzig", "three hundred and forty-five"),
    1000: ("eintausend", "one thousand"),
}


@pytest.fixture(scope="module")
def small():
    return load_pairs("num2words:de-en:max=1999", seed=0)


def test_hand_written_german_english_pairs() -> None:
    numbers = list(GERMAN_ENGLISH)
    assert number_pairs(numbers, "de", "en") == [GERMAN_ENGLISH[n] for n in numbers]


def test_splits_cover_the_range_once_and_contain_known_pairs(small) -> None:
    everything = set(small.train + small.valid + small.test)
    assert len(everything) == 2000
    for pair in GERMAN_ENGLISH.values():
        assert pair in everything
    assert not set(small.train) & set(small.test)
    assert not set(small.train) & set(small.valid)
    assert not set(small.valid) & set(small.test)
    assert len(small.valid) == len(set(small.valid)) and len(small.test) == len(set(small.test))
    assert len(set(small.train)) + len(small.valid) + len(small.test) == 2000
    assert (small.src_lang, small.tgt_lang) == ("de", "en")
    # English number words recur: words; each German number is one compound word: BPE
    # pieces (its morphemes), of a small vocabulary.
    assert (small.src_tokenizer_kind, small.tgt_tokenizer_kind) == ("bpe", "word")
    assert (small.src_vocab_size, small.tgt_vocab_size) == (60, None)


def test_every_magnitude_is_trained(small) -> None:
    english = {e: n for n, (_, e) in enumerate(number_pairs(list(range(2000)), "de", "en"))}
    held_out = [english[e] for _, e in small.valid + small.test]
    assert min(held_out) >= 20  # eleven, zwölf: words of their own, only training teaches them
    digits = Counter(len(str(english[e])) for _, e in small.train)
    # 0..1999: 10 one-digit, 90 two-digit numbers; each digit count still gets a fair share
    share = len(set(small.train)) / 4
    assert all(count >= share for count in digits.values()), digits
    assert digits[4] == sum(len(str(english[e])) == 4 for _, e in set(small.train))


def test_split_is_deterministic_and_seed_dependent(small) -> None:
    assert load_pairs("num2words:de-en:max=1999", seed=0) == small
    other = load_pairs("num2words:de-en:max=1999", seed=1)
    assert set(other.test) != set(small.test)


def test_other_directions_and_digits() -> None:
    splits = load_pairs("num2words:digits-fr:max=99")
    assert ("24", "vingt-quatre") in splits.train + splits.valid + splits.test


def test_long_numbers_are_drawn_with_a_spread_of_lengths() -> None:
    splits = load_pairs("num2words:digits-en:max=1000000000,n=400", seed=2)
    digits = [len(src) for src, _ in set(splits.train + splits.valid + splits.test)]
    assert len(digits) == 400
    assert min(digits) <= 2 and max(digits) >= 9
    # Digit counts 1..10 are equally likely: about 40 of each, not 90% nine-digit numbers.
    assert 20 < sum(d == 3 for d in digits) < 70
    assert sum(d == 9 for d in digits) < 70


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("num2words:xx-en", "unknown language 'xx'; supported: .*de"),
        ("num2words:de", "SRC-TGT"),
        ("num2words:de-de", "SRC-TGT"),
        ("num2words:de-en:max=10", "fewer than 20 numbers"),
        ("num2words:de-en:max=ten", "max='ten' is not an integer"),
    ],
)
def test_bad_specs_are_explained(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_pairs(spec)
