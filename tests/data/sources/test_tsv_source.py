"""Tests for the tsv: source (user files in Tatoeba/Anki format) and its error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnkit.data.errors import DataError, DataFileNotFoundError
from attnkit.data.sources.tsv_source import read_tsv
from attnkit.data.translation import load_pairs

ROWS = [(f"sentence number {i}", f"phrase numéro {i}") for i in range(60)]


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    lines = [f"{a}\t{b}\tCC-BY 2.0 (France) Attribution: tatoeba.org #{i}"
             for i, (a, b) in enumerate(ROWS)]
    return _write(tmp_path / "eng-fra.tsv", "\ufeff" + "\n".join(lines) + "\n\n")


def test_tsv_pairs_ignore_extra_columns_bom_and_blank_lines(good: Path) -> None:
    assert read_tsv(good) == ROWS


def test_tsv_splits_are_nonempty_disjoint_deterministic(good: Path) -> None:
    splits = load_pairs(f"tsv:{good}", seed=3)
    parts = [splits.train, splits.valid, splits.test]
    assert all(parts)
    assert sorted(p for part in parts for p in part) == sorted(ROWS)
    assert not (set(splits.train) & set(splits.test))
    assert not (set(splits.train) & set(splits.valid))
    assert load_pairs(f"tsv:{good}", seed=3) == splits


def test_repeated_source_sentence_stays_in_one_split(tmp_path: Path) -> None:
    lines = [f"s{i % 10}\tt{i}" for i in range(100)]  # 10 distinct sources, 10 times each
    splits = load_pairs(f"tsv:{_write(tmp_path / 'r.tsv', chr(10).join(lines))}")
    sources = [{s for s, _ in part} for part in (splits.train, splits.valid, splits.test)]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])


def test_reverse_option_swaps_columns(good: Path) -> None:
    splits = load_pairs(f"tsv:{good}:reverse=1")
    assert all(t.startswith("sentence") for _, t in splits.train)


def test_path_with_a_colon(tmp_path: Path) -> None:
    path = _write(tmp_path / "a:b.tsv", "\n".join(f"{a}\t{b}" for a, b in ROWS))
    assert load_pairs(f"tsv:{path}").sizes()["train"] > 40


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileNotFoundError, match=r"nope\.tsv does not exist") as info:
        load_pairs(f"tsv:{tmp_path / 'nope.tsv'}")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.tsv", "\n \n")
    with pytest.raises(DataError, match=r"empty\.tsv: the file has no pairs"):
        load_pairs(f"tsv:{path}")


def test_line_without_tab_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.tsv", "a\tb\nc\td\nno tab here\n")
    with pytest.raises(DataError, match=r"bad\.tsv:3: no tab.*'no tab here'"):
        load_pairs(f"tsv:{path}")


def test_bad_encoding_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "latin1.tsv", b"a\tb\n" + "café\tcoffee\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.tsv:2: not valid UTF-8 \(byte 0xe9"):
        load_pairs(f"tsv:{path}")


def test_empty_side_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "half.tsv", "a\tb\nc\t \n")
    with pytest.raises(DataError, match=r"half\.tsv:2: empty target"):
        read_tsv(path)


def test_too_few_sentences_to_split(tmp_path: Path) -> None:
    path = _write(tmp_path / "two.tsv", "a\tb\nc\td\n")
    with pytest.raises(DataError, match=r"tsv:.*two\.tsv.*at least 3"):
        load_pairs(f"tsv:{path}")
