"""Parsing chorale files: voices by name, pickups, ties; bad files skipped; the cache."""

from __future__ import annotations

import os
import warnings

import pytest

from attnkit.data.errors import DataError
from attnkit.data.music import chorales


def write_score(path, parts=("Soprano", "Alto", "Tenor", "Bass"), pickup=True) -> None:
    """A 4/4 piece: a quarter pickup, then one bar where each voice holds a half note tied
    to a quarter, then a quarter (MIDI pitches 72, 67, 64, 48 shifted down per part)."""
    from music21 import meter, note, stream, tie

    score = stream.Score()
    for index, name in enumerate(parts):
        part = stream.Part()
        part.partName = name
        base = 72 - 5 * index
        m0 = stream.Measure(number=0)
        m0.append(meter.TimeSignature("4/4"))
        if pickup:
            m0.padAsAnacrusis = True
            m0.append(note.Note(base, quarterLength=1))
            m0.paddingLeft = 3.0
        m1 = stream.Measure(number=1)
        first, second = note.Note(base + 2, quarterLength=2), note.Note(base + 2, quarterLength=1)
        first.tie, second.tie = tie.Tie("start"), tie.Tie("stop")
        m1.append([first, second, note.Note(base - 1, quarterLength=1)])
        if pickup:
            part.append([m0, m1])
        else:
            m1.insert(0, meter.TimeSignature("4/4"))
            part.append(m1)
        score.insert(0, part)
    score.write("musicxml", fp=str(path))


def test_parse_a_written_score(tmp_path) -> None:
    path = tmp_path / "mini.musicxml"
    write_score(path)
    chorale = chorales.parse_chorale(path)
    # tied half + quarter merged into 12 sixteenths; the pickup is not a bar
    assert chorale.voice_notes(0) == [(0, 4, 72), (4, 12, 74), (16, 4, 71)]
    assert chorale.voice_notes(3) == [(0, 4, 57), (4, 12, 59), (16, 4, 56)]
    assert chorale.bars == (4,) and chorale.end == 20 and chorale.meter == "4/4"
    assert chorale.off_grid == 0


def test_instrument_parts_are_left_out(tmp_path) -> None:
    path = tmp_path / "with-violin.musicxml"
    write_score(path, parts=("Violin", "Soprano", "Alto", "Tenor", "Bass"))
    chorale = chorales.parse_chorale(path)
    assert chorale.voice_notes(0)[0] == (0, 4, 67)  # the soprano, not the violin (72)


def test_a_bad_file_is_skipped_with_its_name_and_the_rest_kept(tmp_path) -> None:
    good, broken, duet = tmp_path / "good.musicxml", tmp_path / "broken.mxl", tmp_path / "duet.xml"
    write_score(good)
    broken.write_bytes(b"\x00not a zip at all")
    write_score(duet, parts=("Flute", "Oboe"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = chorales.parse_chorales([good, broken, duet])
    assert [c.name for c in found.chorales] == [f"{tmp_path.name}/good"]
    assert [s[0] for s in found.skipped] == [str(broken), str(duet)]
    assert "four vocal parts" in found.skipped[1][1]
    assert any(str(broken) in str(w.message) for w in caught)


def test_no_readable_file_raises_naming_them(tmp_path) -> None:
    broken = tmp_path / "broken.mxl"
    broken.write_bytes(b"nonsense")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=r"broken\.mxl"):
            chorales.parse_chorales([broken])
    with pytest.raises(DataError, match="no chorale files"):
        chorales.parse_chorales([])


def test_cached_once_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch) -> None:
    path = tmp_path / "corpus" / "one.musicxml"
    path.parent.mkdir()
    write_score(path)
    monkeypatch.setenv("ATTNKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(chorales, "chorale_paths", lambda: [path])
    calls = []
    real = chorales.parse_chorales
    monkeypatch.setattr(
        chorales, "parse_chorales", lambda paths, **kw: calls.append(paths) or real(paths)
    )
    first = chorales.load_chorales(progress=False)
    second = chorales.load_chorales(progress=False)
    assert len(calls) == 1 and first.chorales == second.chorales  # the second came from cache
    write_score(path, pickup=False)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # surely a new mtime
    third = chorales.load_chorales(progress=False)
    assert len(calls) == 2 and third.chorales[0].bars == (0,)


def test_the_corpus_lists_the_bach_chorales() -> None:
    paths = chorales.chorale_paths()
    assert len(paths) > 300 and all(p.exists() for p in paths[:5])
