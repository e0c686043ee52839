"""Exact match by number length, against num2words's own words."""

from __future__ import annotations

from num2words import num2words

from attnkit.tasks.magnitudes import magnitude_table, render_table


class WrongBelowTen:
    """Translates German number words like num2words does, except the one-digit numbers."""

    def __init__(self) -> None:
        self.german = {num2words(n, lang="de"): n for n in range(2000)}

    def translate(self, texts: list[str]) -> list[str]:
        numbers = [self.german[t] for t in texts]
        return ["?" if n < 10 else num2words(n, lang="en") for n in numbers]


def test_each_digit_count_is_scored_on_its_own() -> None:
    rows, misses = magnitude_table(WrongBelowTen(), [25, 300, 1999], "de", "en", every_up_to=99)
    table = {r.digits: (r.held_out, r.held_out_exact, r.every, r.every_exact) for r in rows}
    assert table == {1: (0, None, 10, 0.0), 2: (1, 100.0, 90, 100.0),
                     3: (1, 100.0, 0, None), 4: (1, 100.0, 0, None)}
    assert [m.number for m in misses] == list(range(10))
    assert misses[3].source == "drei" and misses[3].reference == "three"
    text = render_table(rows)
    assert "  0.0 % of 10" in text and "100.0 % of 90" in text
