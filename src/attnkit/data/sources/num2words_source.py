"""``num2words:SRC-TGT`` — numbers written out in words in two languages.

Pairs come from the PyPI package ``num2words`` (56 languages); ``digits`` is accepted as a
pseudo-language (``num2words:digits-de`` pairs ``24`` with ``vierundzwanzig``). German
reverses tens and units ("vierundzwanzig" = four-and-twenty), which makes ``de-en`` a small
real test of attention's reordering.

Options (after a second colon, comma-separated):
    ``min``, ``max``: the number range (default 0..9999);
    ``n``: how many numbers to draw when the range is larger (default 20000; a range of at
    most ``n`` numbers is used whole). Drawn numbers have a uniformly distributed *digit
    count*, so long and short numbers are both present (for plots of quality against length);
    ``valid``, ``test``: fractions of the numbers held out (default 0.05 each).

Every magnitude is trained. Each number lands in exactly one split, chosen by a hash of
(seed, number), except that numbers below 20 are never held out: their names are words of
their own in most languages (eleven, zwölf), which no model can guess from other numbers.
Used whole, a range holds few short numbers (0..9999: 100 below 100, 1 %), so training
numbers of each digit count are repeated until that digit count makes up at least an equal
share (1/K for K digit counts) of the training pairs; validation and test hold each number
once.

The suggested tokenizer per side is ``"word"`` when that side uses a small vocabulary of
recurring words (English number words), BPE with :data:`COMPOUND_PIECES` pieces when each
number is one compound word (German ``vierundzwanzig``: the pieces become its morphemes
``vier|und|zwanzig``, so attention lands on whole parts), and ``"char"`` for digits.
"""

from __future__ import annotations

import random

from attnkit.data.errors import DataError, MissingPackageError
from attnkit.data.registry import check_options, int_option, register_source
from attnkit.data.splits import Splits, split_by_key, split_fractions

__all__ = ["COMPOUND_PIECES", "digit_count", "load_num2words", "number_pairs",
           "supported_languages"]

DIGITS = "digits"
_OPTIONS = ("min", "max", "n", "valid", "test")
_MAX_WORD_VOCAB = 1000
NEVER_HELD_OUT = 20  # numbers below this always train: their names are words of their own
# BPE pieces for a side whose numbers are single compound words. German number words are
# built from about 40 morphemes (ein, zwei, ..., zehn, elf, zwölf, zwanzig, ..., und, hundert,
# tausend); with 60 pieces BPE learns them, and the attention of a German->English model
# falls on the right part for 95 % of the English words (docs/experiments.md).
COMPOUND_PIECES = 60


def _num2words():
    try:
        import num2words
    except ImportError:
        raise MissingPackageError(
            "the num2words data source needs the PyPI package num2words: "
            "pip install 'num2words>=0.5.13'"
        ) from None
    return num2words


def supported_languages() -> list[str]:
    """Language codes num2words can write, plus ``"digits"``."""
    return sorted([*_num2words().CONVERTER_CLASSES, DIGITS])


def _writer(lang: str):
    n2w = _num2words()
    if lang == DIGITS:
        return str
    if lang not in n2w.CONVERTER_CLASSES:
        raise DataError(
            f"num2words: unknown language {lang!r}; supported: {', '.join(supported_languages())}"
        )
    return lambda n: n2w.num2words(n, lang=lang)


def number_pairs(numbers: list[int], src: str, tgt: str) -> list[tuple[str, str]]:
    """``(words in src, words in tgt)`` for each number, e.g. ``24 -> ("vierundzwanzig",
    "twenty-four")`` for ``src="de", tgt="en"``.

    Raises:
        DataError: an unknown language, or a number num2words cannot write in it.
    """
    to_src, to_tgt = _writer(src), _writer(tgt)
    pairs = []
    for n in numbers:
        try:
            pair = (to_src(n), to_tgt(n))
        except (NotImplementedError, OverflowError, ValueError, KeyError, IndexError) as exc:
            raise DataError(f"num2words cannot write {n} in {src!r}/{tgt!r}: {exc}") from None
        pairs.append((" ".join(pair[0].split()), " ".join(pair[1].split())))
    return pairs


def _suggest_tokens(lang: str, texts) -> tuple[str, int | None]:
    """``(kind, vocabulary size or None)`` for one side: ``"word"`` when it uses a small
    closed vocabulary whose words recur ("twenty-four": ~100 words); otherwise most numbers
    are their own word and a held-out number must be spelled from pieces seen in training:
    characters for digits ("24"), BPE into morphemes for compound words ("vierundzwanzig")."""
    occurrences = [w for text in texts for w in text.split()]
    distinct = len(set(occurrences))
    recurring = distinct <= 0.5 * len(occurrences)
    if distinct <= _MAX_WORD_VOCAB and recurring:
        return "word", None
    return ("char", None) if lang == DIGITS else ("bpe", COMPOUND_PIECES)


def digit_count(number: int) -> int:
    """Digits of ``number`` written in base 10 (``0`` has one)."""
    return len(str(abs(number)))


def _balanced(train: list[int], seed: int) -> list[int]:
    """``train`` with the numbers of each digit count repeated (cyclically, in a seeded order)
    until that digit count makes up at least ``1/K`` of the list, for ``K`` digit counts."""
    bands: dict[int, list[int]] = {}
    for number in train:
        bands.setdefault(digit_count(number), []).append(number)
    share = -(-len(train) // len(bands))  # ceil(len / K)
    rng = random.Random(f"num2words-balance:{seed}")
    out: list[int] = []
    for digits in sorted(bands):
        band = bands[digits]
        if len(band) >= share:
            out.extend(band)
            continue
        order = rng.sample(band, len(band))
        out.extend(order[i % len(band)] for i in range(share))
    return out


def _draw(lo: int, hi: int, n: int, seed: int) -> list[int]:
    """All of ``lo..hi`` if it has at most ``n`` numbers, else ``n`` distinct numbers whose
    digit count is uniform over the digit counts present in the range."""
    if hi - lo + 1 <= n:
        return list(range(lo, hi + 1))
    rng = random.Random(f"num2words-draw:{seed}:{lo}:{hi}:{n}")
    bands = []  # (first, last) number with each digit count inside [lo, hi]
    for digits in range(len(str(lo)), len(str(hi)) + 1):
        first = max(lo, 10 ** (digits - 1) if digits > 1 else 0)
        last = min(hi, 10**digits - 1)
        if first <= last:
            bands.append((first, last))
    chosen: set[int] = set()
    while len(chosen) < n:
        first, last = bands[rng.randrange(len(bands))]
        chosen.add(rng.randint(first, last))
    return sorted(chosen)


@register_source(
    "num2words",
    summary="numbers in words, two languages (PyPI num2words); German reorders tens and units",
    example="num2words:de-en",
    options=_OPTIONS,
)
def load_num2words(arg: str, options: dict[str, str], seed: int) -> Splits:
    """Load ``num2words:SRC-TGT[:min=..,max=..,n=..,valid=..,test=..]`` (see module doc).

    Raises:
        DataError: a malformed pair, unknown language, bad option, or a range with fewer
            than 20 numbers.
        MissingPackageError: num2words is not installed.
    """
    where = f"num2words:{arg}"
    check_options(where, options, _OPTIONS)
    src, dash, tgt = arg.partition("-")
    if not dash or not src or not tgt or src == tgt:
        raise DataError(f"{where}: expected two different languages as SRC-TGT, e.g. de-en")
    lo = int_option(where, options, "min", 0)
    hi = int_option(where, options, "max", 9999)
    n = int_option(where, options, "n", 20000, minimum=20)
    if hi - lo + 1 < 20:
        raise DataError(f"{where}: range min={lo}..max={hi} holds fewer than 20 numbers")
    valid, test = split_fractions(options)
    numbers = _draw(lo, hi, n, seed)
    by_number = dict(zip(numbers, number_pairs(numbers, src, tgt), strict=True))
    train, val, tst = split_by_key(numbers, lambda x: x, valid=valid, test=test, seed=seed)
    small = sorted(x for x in val + tst if x < NEVER_HELD_OUT)
    val = [x for x in val if x >= NEVER_HELD_OUT]
    tst = [x for x in tst if x >= NEVER_HELD_OUT]
    train = _balanced(sorted(train + small), seed)
    src_kind, src_vocab = _suggest_tokens(src, (p[0] for p in by_number.values()))
    tgt_kind, tgt_vocab = _suggest_tokens(tgt, (p[1] for p in by_number.values()))
    canon = f"num2words:{src}-{tgt}"
    if options:
        canon += ":" + ",".join(f"{k}={options[k]}" for k in sorted(options))
    return Splits(
        train=[by_number[x] for x in train],
        valid=[by_number[x] for x in val],
        test=[by_number[x] for x in tst],
        name=canon,
        description=(
            f"numbers {lo}..{hi} ({len(numbers)} drawn) written in {src!r} and {tgt!r} by "
            "the PyPI package num2words; split by number (below 20 always in training); "
            "training numbers of each digit count repeated to at least an equal share"
        ),
        src_lang=src,
        tgt_lang=tgt,
        src_tokenizer_kind=src_kind,
        tgt_tokenizer_kind=tgt_kind,
        src_vocab_size=src_vocab,
        tgt_vocab_size=tgt_vocab,
    )
