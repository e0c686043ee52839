"""Exact match by number length: does a number translator get small numbers right too?

Overall exact match hides the short numbers: 0..9999 holds 100 numbers below 100 (1 %). Here
each digit count is scored on its own, twice where that helps: on the held-out test numbers
(never seen in training) and on every number of that length (for the short ones, which are
few, and whose names below 20 are words of their own that only training can teach).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from attnkit.data.sources.num2words_source import digit_count, number_pairs
from attnkit.tasks.translate import Translator


@dataclass
class Magnitude:
    """Exact match (0..100, ``None`` without numbers) of one digit count."""

    digits: int
    held_out: int  # test numbers of this length
    held_out_exact: float | None
    every: int  # every number of this length (0 when not scored)
    every_exact: float | None


@dataclass
class Miss:
    """A number the model got wrong."""

    number: int
    source: str
    output: str
    reference: str


def exact_by_digits(
    translator: Translator, numbers: Sequence[int], src: str, tgt: str
) -> tuple[dict[int, tuple[int, float]], list[Miss]]:
    """Translate ``numbers`` written in ``src`` into ``tgt``: ``{digits: (count, exact %)}``
    and the misses, smallest number first."""
    pairs = number_pairs(list(numbers), src, tgt)
    outputs = translator.translate([source for source, _ in pairs])
    right: dict[int, list[bool]] = {}
    misses = []
    for number, (source, reference), output in zip(numbers, pairs, outputs, strict=True):
        right.setdefault(digit_count(number), []).append(output == reference)
        if output != reference:
            misses.append(Miss(number, source, output, reference))
    table = {d: (len(ok), 100.0 * sum(ok) / len(ok)) for d, ok in sorted(right.items())}
    return table, sorted(misses, key=lambda miss: miss.number)


def magnitude_table(
    translator: Translator,
    held_out: Sequence[int],
    src: str,
    tgt: str,
    *,
    every_up_to: int = 999,
) -> tuple[list[Magnitude], list[Miss]]:
    """Exact match per digit count on the ``held_out`` numbers, and on every number from 0 to
    ``every_up_to``; the misses of both (each number once)."""
    held, held_misses = exact_by_digits(translator, held_out, src, tgt)
    every, every_misses = exact_by_digits(translator, range(every_up_to + 1), src, tgt)
    rows = []
    for digits in sorted(set(held) | set(every)):
        h, e = held.get(digits), every.get(digits)
        rows.append(Magnitude(digits, h[0] if h else 0, h[1] if h else None,
                              e[0] if e else 0, e[1] if e else None))
    misses = {miss.number: miss for miss in every_misses + held_misses}
    return rows, [misses[n] for n in sorted(misses)]


def render_table(rows: Sequence[Magnitude]) -> str:
    """The table as text, one line per digit count."""

    def cell(exact: float | None, count: int) -> str:
        return "-" if exact is None else f"{exact:5.1f} % of {count:,}"

    lines = [f"  {'digits':>6}   {'held-out test numbers':<22} every number of that length"]
    for row in rows:
        lines.append(
            f"  {row.digits:>6}   {cell(row.held_out_exact, row.held_out):<22} "
            f"{cell(row.every_exact, row.every)}"
        )
    return "\n".join(lines)
