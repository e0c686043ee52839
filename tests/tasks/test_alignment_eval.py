"""The ground truth of German→English number alignment, and the accuracy computed from it."""

from __future__ import annotations

import pytest
import torch

from attnkit.tasks.alignment_eval import (
    english_parts,
    german_spans,
    number_alignment_accuracy,
    numbers_in,
)
from attnkit.tasks.translate import Alignment


def test_german_spans_split_at_the_parts() -> None:
    text = "neuntausendachthundertsiebenundfünfzig"
    spans = german_spans(9857)
    assert [text[a:b] for a, b in spans] == ["neuntausend", "achthundert", "siebenundfünfzig"]
    assert german_spans(1001) == [(0, 10), None, (10, 14)]  # eintausend|eins
    with pytest.raises(ValueError, match=r"1\.\.9999"):
        german_spans(10000)


def test_numbers_in_finds_the_numbers_a_split_spells() -> None:
    texts = ["vierundzwanzig", "eintausendeins", "kein zahlwort", "neuntausendneunhundertneunundneunzig"]
    assert numbers_in(texts, limit=1001) == [24, 1001]  # 9999 lies beyond the limit
    with pytest.raises(ValueError, match="num2words:de-en"):
        numbers_in(["hallo"], limit=50)


def test_english_parts() -> None:
    assert english_parts("nine thousand, eight hundred and fifty-seven") == [0, 0, 1, 1, None, 2]
    assert english_parts("one thousand and one") == [0, 0, None, 2]
    assert english_parts("twenty-four") == [2]


class FakeTranslator:
    """Attends to a chosen German character for each English word."""

    def __init__(self, looks: dict[int, list[int]]) -> None:
        self.looks = looks

    def align(self, german: str, english: str) -> Alignment:
        from num2words import num2words

        number = next(n for n, seen in self.looks.items() if num2words(n, lang="de") == german)
        rows = torch.zeros(len(self.looks[number]) + 1, len(german))
        for row, column in enumerate(self.looks[number]):
            rows[row, column] = 1.0
        return Alignment(list(german), [*english.split(), "</s>"], rows)


def test_accuracy_counts_words_looking_inside_their_part() -> None:
    # 324 = drei|hundert (0..11) + vier|und|zwanzig (11..25); English: three hundred and twenty-four
    perfect = FakeTranslator({324: [0, 5, 0, 15]})
    assert number_alignment_accuracy(perfect, [324]).accuracy == 100.0
    half = FakeTranslator({324: [20, 5, 0, 3]})  # "three" and "twenty-four" look at the wrong part
    score = number_alignment_accuracy(half, [324])
    assert score.words == 3 and score.accuracy == pytest.approx(100 / 3)
