"""Cutting a document into sentences and the sentences into passages.

Sentences: blank lines separate blocks; inside a block, headings (Markdown ``#`` lines, lines
underlined with ``---``/``===`` as in reStructuredText and numpydoc), list items, doctest lines
(``>>>``) and table rows stand alone, and running text is split by NLTK's Punkt sentence
tokenizer (its unsupervised model with a list of common abbreviations, so no data download).

Passages: consecutive sentences packed up to ``max_words`` words (a longer sentence is a
passage of its own). A passage is what the question first attends over; its sentences are
what it attends over second.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["ABBREVIATIONS", "split_passages", "split_sentences"]

ABBREVIATIONS = frozenset(
    [
        "e.g",
        "i.e",
        "etc",
        "cf",
        "vs",
        "al",
        "approx",
        "resp",
        "fig",
        "figs",
        "eq",
        "eqs",
        "no",
        "nos",
        "dr",
        "mr",
        "mrs",
        "ms",
        "prof",
        "st",
        "vol",
        "ch",
        "sec",
        "ref",
        "refs",
        "incl",
        "esp",
        "ca",
    ]
)
_RULE = re.compile(r"[-=~^*_`#:+]{3,}")  # underlines, horizontal rules, code fences
_STANDALONE = re.compile(
    r"(#{1,6}\s|>>>|\.\.\.\s|\.\.\s|[-*+•]\s|\d{1,3}[.)]\s|\|)"  # heading, doctest, list, table
)
_ITEM = re.compile(r"([-*+•]\s|\d{1,3}[.)]\s)")


@lru_cache(maxsize=1)
def _punkt():
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types = set(ABBREVIATIONS)
    return PunktSentenceTokenizer(params)


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, whitespace-normalised, in order; empty text gives ``[]``.

    Raises:
        TypeError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    sentences: list[str] = []
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            joined = " ".join(buffer)
            sentences.extend(" ".join(s.split()) for s in _punkt().tokenize(joined))
            buffer.clear()

    for block in re.split(r"\n[ \t]*\n", text):
        lines = [line.strip() for line in block.splitlines()]
        for i, line in enumerate(lines):
            if not line or _RULE.fullmatch(line):
                continue
            heading = i + 1 < len(lines) and _RULE.fullmatch(lines[i + 1] or "") is not None
            if heading or (_STANDALONE.match(line) and not _ITEM.match(line)):
                flush()
                sentences.append(" ".join(line.lstrip("#").split()))
            elif _ITEM.match(line):  # a list item starts a new sentence run
                flush()
                buffer.append(line)
            else:
                buffer.append(line)
        flush()
    return [s for s in sentences if s]


def split_passages(text: str, *, max_words: int = 100) -> list[list[str]]:
    """``text`` as passages, each a list of consecutive sentences of at most ``max_words``
    words in total (a longer sentence forms a passage alone).

    Raises:
        ValueError: ``max_words`` < 1.
        TypeError: ``text`` is not a string.
    """
    if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
        raise ValueError(f"max_words must be a positive integer, got {max_words!r}")
    passages: list[list[str]] = []
    current: list[str] = []
    words = 0
    for sentence in split_sentences(text):
        n = len(sentence.split())
        if current and words + n > max_words:
            passages.append(current)
            current, words = [], 0
        current.append(sentence)
        words += n
    if current:
        passages.append(current)
    return passages
