"""Reading a documents folder: good files kept, bad ones reported by name."""

from __future__ import annotations

import codecs

import pytest

from attnkit.data.documents import decode_text, read_folder
from attnkit.data.errors import DataError, DataFileNotFoundError


def test_reads_txt_and_md_recursively_and_ignores_other_suffixes(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("Mountains are tall.", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.MD").write_text("# Rivers\n\nRivers flow.", encoding="utf-8")
    (tmp_path / "c.py").write_text("print('not a document')", encoding="utf-8")
    report = read_folder(tmp_path)
    assert [d.name for d in report.documents] == ["a.txt", "sub/b.MD"]
    assert report.documents[0].text == "Mountains are tall."
    assert report.problems == []


def test_bad_files_are_named_and_the_rest_is_kept(tmp_path) -> None:
    (tmp_path / "good.txt").write_text("A good file.", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me".encode("latin-1"))
    (tmp_path / "binary.md").write_bytes(b"PK\x03\x04\x00\x00\x00")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "broken.txt").symlink_to(tmp_path / "missing-target.txt")  # unreadable
    report = read_folder(tmp_path)
    assert [d.name for d in report.documents] == ["good.txt"]
    reasons = dict(report.problems)
    assert set(reasons) == {"latin1.txt", "binary.md", "empty.txt", "broken.txt"}
    assert "not UTF-8" in reasons["latin1.txt"] and "0xe9" in reasons["latin1.txt"]
    assert "NUL" in reasons["binary.md"]
    assert "cannot be read" in reasons["broken.txt"]
    assert "latin1.txt: not UTF-8" in report.describe_problems()


def test_utf8_bom_and_utf16_are_decoded() -> None:
    assert decode_text(codecs.BOM_UTF8 + "héllo".encode(), "x.txt") == "héllo"
    assert decode_text("héllo".encode("utf-16"), "x.txt") == "héllo"


def test_empty_missing_and_unreadable_folders_raise_naming_the_folder(tmp_path) -> None:
    with pytest.raises(DataFileNotFoundError, match="does not exist"):
        read_folder(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DataFileNotFoundError, match="is not a folder"):
        read_folder(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no readable"):
        read_folder(empty)
    (empty / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DataError, match=r"bad\.txt"):  # the skipped file is named
        read_folder(empty)


def test_digest_changes_with_content(tmp_path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("one", encoding="utf-8")
    first = read_folder(tmp_path).documents[0].digest
    path.write_text("two", encoding="utf-8")
    assert read_folder(tmp_path).documents[0].digest != first
