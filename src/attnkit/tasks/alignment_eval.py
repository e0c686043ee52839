"""How often attention looks at the right source words, where the right answer is known.

German number words compose exactly: ``neuntausend|achthundert|siebenundfünfzig`` is the
German of 9000, 800 and 57 written one after the other. The English
``nine thousand, eight hundred and fifty-seven`` has the same three parts. So for each English
word we know which German characters express it, and can check where a German→English model
attends when it writes that word: its *alignment accuracy* is the share of English words
(``and`` aside, it has no German counterpart) whose most-attended German character lies in
the right part.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from attnkit.tasks.translate import Translator

_PART_WORDS = {"thousand": 0, "hundred": 1}


@dataclass
class AlignmentScore:
    accuracy: float  # 0..100
    words: int  # English words scored
    numbers: int


def german_spans(number: int) -> list[tuple[int, int] | None]:
    """Character spans of the thousands, hundreds and rest parts of ``number``'s German words
    (``None`` for a part that is zero). Raises ``ValueError`` outside 1..9999."""
    from num2words import num2words

    if not 1 <= number <= 9999:
        raise ValueError(f"number must be in 1..9999, got {number}")
    parts = [number // 1000 * 1000, number // 100 % 10 * 100, number % 100]
    spans: list[tuple[int, int] | None] = []
    start = 0
    for part in parts:
        if part == 0:
            spans.append(None)
            continue
        length = len(num2words(part, lang="de"))
        spans.append((start, start + length))
        start += length
    if start != len(num2words(number, lang="de")):
        raise ValueError(f"the German words of {number} do not compose from its parts")
    return spans


def english_parts(english: str) -> list[int | None]:
    """For each word of ``english``: 0 (thousands part), 1 (hundreds), 2 (the rest) or None
    ("and")."""
    words = english.split()
    marks: list[int | None] = []
    part = None
    boundaries = [i for i, w in enumerate(words) if re.sub(r"\W", "", w) in _PART_WORDS]
    for i, word in enumerate(words):
        if word == "and":
            marks.append(None)
            continue
        upcoming = [b for b in boundaries if b >= i]
        part = _PART_WORDS[re.sub(r"\W", "", words[upcoming[0]])] if upcoming else 2
        marks.append(part)
    return marks


def number_alignment_accuracy(translator: Translator, numbers: Iterable[int]) -> AlignmentScore:
    """Alignment accuracy of a German→English number translator (teacher-forced on the true
    English, so every English word is scored where the model attends while writing it). A
    source token (a character or a subword) counts at the position of its first character.

    Raises:
        ValueError: a translator whose source tokens do not spell the German text, or whose
            target is not English words (the ground truth needs both).
    """
    from num2words import num2words

    right = total = count = 0
    for number in numbers:
        german, english = num2words(number, lang="de"), num2words(number, lang="en")
        spans, marks = german_spans(number), english_parts(english)
        alignment = translator.align(german, english)
        starts = _token_starts(alignment.source_tokens, german)
        if len(alignment.target_tokens) != len(marks) + 1:  # + the closing </s>
            raise ValueError("alignment accuracy needs a word-level English target")
        for row, part in enumerate(marks):
            if part is None:
                continue
            span = spans[part]
            looked = starts[int(alignment.weights[row].argmax())]  # first character of the token
            right += span is not None and span[0] <= looked < span[1]
            total += 1
        count += 1
    return AlignmentScore(100.0 * right / max(total, 1), total, count)


def numbers_in(texts: Iterable[str], lang: str = "de", limit: int = 9999) -> list[int]:
    """The numbers 1..``limit`` whose ``lang`` words are among ``texts``, in ascending order.

    Raises:
        ValueError: none of ``texts`` is a number in 1..``limit`` written in ``lang``.
    """
    from num2words import num2words

    wanted = set(texts)
    found = [n for n in range(1, limit + 1) if num2words(n, lang=lang) in wanted]
    if not found:
        raise ValueError(
            f"alignment accuracy needs {lang} number words in 1..{limit} as sources; "
            "none of the split's sources is one (train on num2words:de-en)"
        )
    return found


def _token_starts(tokens: list[str], text: str) -> list[int]:
    """The character offset in ``text`` where each token starts (tokens spell ``text``)."""
    starts, position = [], 0
    for token in tokens:
        starts.append(position)
        position += len(token.replace("▁", ""))
    if position != len(text):
        raise ValueError(f"the source tokens {tokens} do not spell {text!r}")
    return starts
