"""Small real chorales for the music tests: a few files of music21's corpus, parsed once per
test session (a few seconds), and hand-made chorales with known events."""

from __future__ import annotations

import functools

from attnkit.data.music import Chorale, ChoraleSet, chorales


@functools.lru_cache(maxsize=1)
def tiny_chorales(count: int = 8) -> ChoraleSet:
    """The first ``count`` Bach chorales of music21's corpus, parsed now (no cache)."""
    return chorales.parse_chorales(chorales.chorale_paths()[:count])


def two_bar_chorale(name: str = "test/two-bars", shift: int = 0) -> Chorale:
    """A 3/4 quarter-note pickup then two full 3/4 bars, four voices (times in sixteenths)."""
    notes = [
        (0, 0, 4, 67 + shift), (1, 0, 4, 62), (2, 0, 4, 59), (3, 0, 4, 43),  # pickup
        (0, 4, 8, 69 + shift), (1, 4, 4, 64), (2, 4, 12, 60), (3, 4, 12, 45),  # bar 1
        (1, 8, 4, 62),
        (0, 12, 4, 71 + shift), (1, 12, 4, 66),
        (0, 16, 12, 72 + shift), (1, 16, 12, 67), (2, 16, 12, 64), (3, 16, 12, 48),  # bar 2
    ]
    return Chorale(name=name, notes=tuple(sorted(notes, key=lambda n: (n[1], n[0]))),
                   bars=(4, 16), end=28, meter="3/4")
