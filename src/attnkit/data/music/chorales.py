"""The Bach chorales of music21's bundled corpus, parsed once into notes on a sixteenth grid.

``load_chorales()`` parses the 371 four-part chorales that ``music21.corpus.chorales`` lists
(Riemenschneider's edition, shipped inside the ``music21`` package: nothing is downloaded) and
caches the result (``attnkit.data.cache``; rebuilt when a corpus file or this parser changes).
Parsing takes a minute or two the first time, milliseconds after.

A chorale becomes a :class:`Chorale`: its notes ``(voice, onset, duration, pitch)`` with times
in sixteenth notes (the shortest value in the chorales; the odd note off that grid is rounded,
and counted), tied notes merged, and the offsets of its barlines. A file that cannot be read
or parsed is skipped with a warning that names it; the others are kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnkit.data.cache import file_fingerprint, read_cache, write_cache
from attnkit.data.errors import DataError

__all__ = [
    "STEPS_PER_QUARTER",
    "VOICES",
    "Chorale",
    "ChoraleSet",
    "chorale_paths",
    "load_chorales",
    "parse_chorale",
    "parse_chorales",
]

#: time grid: 4 steps per quarter note (sixteenth notes)
STEPS_PER_QUARTER = 4
#: the four voices, top to bottom, in the order of a chorale's parts
VOICES = ("soprano", "alto", "tenor", "bass")
_PARSER_VERSION = 2
_CACHE_NAME = "bach_chorales"


@dataclass(frozen=True)
class Chorale:
    """One chorale on the sixteenth grid.

    Attributes:
        name: the corpus name, e.g. ``"bach/bwv269"``.
        notes: ``(voice, onset, duration, midi_pitch)`` tuples sorted by onset then voice;
            ``voice`` indexes :data:`VOICES`; onset and duration in steps (sixteenths),
            duration ≥ 1.
        bars: onsets (steps) of the full measures, ascending (a pickup measure has none).
        end: the length of the piece in steps.
        meter: the first time signature, e.g. ``"4/4"``.
        off_grid: how many onsets/durations were rounded to the grid.
    """

    name: str
    notes: tuple[tuple[int, int, int, int], ...]
    bars: tuple[int, ...]
    end: int
    meter: str = "4/4"
    off_grid: int = 0

    def voice_notes(self, voice: int) -> list[tuple[int, int, int]]:
        """``(onset, duration, pitch)`` of one voice, by onset."""
        return [(o, d, p) for v, o, d, p in self.notes if v == voice]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "notes": [list(n) for n in self.notes],
            "bars": list(self.bars),
            "end": self.end,
            "meter": self.meter,
            "off_grid": self.off_grid,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chorale:
        return cls(
            name=data["name"],
            notes=tuple(tuple(n) for n in data["notes"]),  # type: ignore[misc]
            bars=tuple(data["bars"]),
            end=int(data["end"]),
            meter=data.get("meter", "4/4"),
            off_grid=int(data.get("off_grid", 0)),
        )


@dataclass(frozen=True)
class ChoraleSet:
    """The parsed chorales, and the files skipped with the reason (``(path, reason)``)."""

    chorales: list[Chorale]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def chorale_paths() -> list[Path]:
    """The files of the four-part chorales listed by ``music21.corpus.chorales``.

    Raises:
        MissingPackageError: music21 is not installed.
    """
    try:
        from music21 import corpus
        from music21.corpus import chorales
    except ImportError:  # pragma: no cover - music21 is a dependency
        from attnkit.data.errors import MissingPackageError

        raise MissingPackageError(
            "the Bach chorales ship with music21: pip install music21"
        ) from None
    names = chorales.Iterator(returnType="filename")
    paths: list[Path] = []
    for name in names:
        found = corpus.getWork(name)
        path = found[0] if isinstance(found, list) else found
        if path:
            paths.append(Path(path))
    return sorted(set(paths))


def _grid(quarters: Any) -> tuple[int, bool]:
    """Quarter lengths (float or Fraction) -> steps, and whether it had to be rounded."""
    exact = float(quarters) * STEPS_PER_QUARTER
    steps = round(exact)
    return steps, abs(exact - steps) > 1e-6


def parse_chorale(path: str | Path) -> Chorale:
    """Parse one chorale file (MusicXML, ``.mxl``, ``.krn``, MIDI: whatever music21 reads).

    The parts named Soprano, Alto, Tenor and Bass are the four voices (instrument parts are
    left out); a score of exactly four parts otherwise is read top to bottom. A chord inside
    a part (a divisi) keeps its top note for the upper voices and its bottom note for the
    lower ones; grace notes are dropped; tied notes are merged.

    Raises:
        DataError: the file cannot be parsed, or does not hold four parts with notes
            (the message names the file).
    """
    from music21 import chord, converter, stream

    path = Path(path)
    try:
        # forceSource: read the file itself, never music21's own pickle of an older version
        score = converter.parse(str(path), forceSource=True)
    except Exception as error:  # music21 raises many kinds; the file is what matters
        raise DataError(f"{path}: cannot parse it with music21: {error}") from None
    parts = _vocal_parts(path, list(getattr(score, "parts", [])))
    notes: list[tuple[int, int, int, int]] = []
    off_grid = 0
    for voice, part in enumerate(parts):
        for element in part.stripTies().flatten().notes:
            if element.duration.isGrace or float(element.duration.quarterLength) == 0:
                continue
            onset, rounded_onset = _grid(element.offset)
            duration, rounded_duration = _grid(element.duration.quarterLength)
            off_grid += int(rounded_onset) + int(rounded_duration)
            if isinstance(element, chord.Chord):
                pitches = sorted(p.midi for p in element.pitches)
                pitch = pitches[-1] if voice < 2 else pitches[0]
            else:
                pitch = element.pitch.midi
            notes.append((voice, onset, max(1, duration), int(pitch)))
    if not notes or len({n[0] for n in notes}) < len(VOICES):
        found = sorted({n[0] for n in notes})
        raise DataError(f"{path}: a part has no notes (voices with notes: {found})")
    notes.sort(key=lambda n: (n[1], n[0]))
    bars = []
    for measure in parts[0].getElementsByClass(stream.Measure):
        onset, _ = _grid(measure.offset)
        if onset == 0 and float(measure.paddingLeft) > 0:
            continue  # a pickup: the first full measure starts after it
        bars.append(onset)
    end = max(max(o + d for _, o, d, _ in notes), _grid(score.highestTime)[0])
    signatures = score.recurse().getElementsByClass("TimeSignature")
    meter = signatures[0].ratioString if len(signatures) else "4/4"
    return Chorale(
        name=_corpus_name(path),
        notes=tuple(notes),
        bars=tuple(sorted(set(bars))),
        end=end,
        meter=meter,
        off_grid=off_grid,
    )


def _vocal_parts(path: Path, parts: list[Any]) -> list[Any]:
    """The soprano, alto, tenor and bass parts: by name (``"Soprano"``, ``"Alto Oboe 2"``,
    ...) when the score has instrument parts too, else the four parts top to bottom."""
    named = []
    for voice in VOICES:
        match = [p for p in parts if (p.partName or "").strip().lower().startswith(voice)]
        if match:
            named.append(match[0])
    if len(named) == len(VOICES):
        return named
    if len(parts) == len(VOICES):
        return parts
    names = [p.partName for p in parts]
    raise DataError(
        f"{path}: expected four vocal parts (soprano, alto, tenor, bass), found {len(parts)} "
        f"parts named {names}"
    )


def _corpus_name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def parse_chorales(paths: Sequence[str | Path], *, progress: bool = False) -> ChoraleSet:
    """Parse each file; a file that fails is skipped with a warning naming it.

    Args:
        paths: chorale files.
        progress: show a progress bar (tqdm, on stderr).

    Raises:
        DataError: ``paths`` is empty, or no file could be parsed (every reason listed).
    """
    if not paths:
        raise DataError("parse_chorales: no chorale files given")
    iterator: Any = paths
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(paths, desc="parsing Bach chorales (once)", unit="chorale")
    chorales: list[Chorale] = []
    skipped: list[tuple[str, str]] = []
    for path in iterator:
        try:
            chorales.append(parse_chorale(path))
        except (DataError, OSError) as error:
            warnings.warn(f"skipping {path}: {error}", stacklevel=2)
            skipped.append((str(path), str(error)))
    if not chorales:
        reasons = "; ".join(reason for _, reason in skipped)
        raise DataError(f"none of the {len(paths)} chorale files could be read: {reasons}")
    return ChoraleSet(chorales, skipped)


def load_chorales(*, limit: int | None = None, progress: bool = True) -> ChoraleSet:
    """The Bach chorales of music21's corpus, from the cache or parsed (and cached) now.

    Args:
        limit: only the first ``limit`` chorale files by name (quick tries, tests).
        progress: show a progress bar while parsing.

    Raises:
        MissingPackageError: music21 is missing.
        DataError: no chorale could be parsed; ``limit`` < 1.
    """
    import music21

    paths = chorale_paths()
    if not paths:
        raise DataError("music21's corpus lists no Bach chorales (is the corpus installed?)")
    name = _CACHE_NAME
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise DataError(f"limit must be a positive number of chorales, got {limit!r}")
        paths, name = paths[:limit], f"{_CACHE_NAME}_first{limit}"
    fingerprint = {
        "parser": _PARSER_VERSION,
        "music21": music21.__version__,
        "files": file_fingerprint(paths),
    }
    cached = read_cache(name, fingerprint)
    if cached is not None:
        return ChoraleSet(
            [Chorale.from_json(c) for c in cached["chorales"]],
            [tuple(s) for s in cached["skipped"]],  # type: ignore[misc]
        )
    parsed = parse_chorales(paths, progress=progress)
    payload = {
        "chorales": [c.to_json() for c in parsed.chorales],
        "skipped": [list(s) for s in parsed.skipped],
    }
    write_cache(name, fingerprint, payload)
    return parsed
