"""Tests for the SWORD zText reader on a small module written here from the format spec."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from attnkit.data.errors import DataError, DataFileNotFoundError
from attnkit.data.sources.sword import osis_to_text, read_ztext


def _write_module(directory: Path, entries: list[str], per_block: int = 2) -> None:
    """Write ``entries`` as a zText testament ``ot`` (blocks of ``per_block`` entries)."""
    bzv, bzs, bzz = bytearray(), bytearray(), bytearray()
    for b, start in enumerate(range(0, len(entries), per_block)):
        raw = b""
        for text in entries[start:start + per_block]:
            data = text.encode("utf-8")
            bzv += struct.pack("<IIH", b, len(raw), len(data))
            raw += data
        packed = zlib.compress(raw)
        bzs += struct.pack("<III", len(bzz), len(packed), len(raw))
        bzz += packed
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ot.bzv").write_bytes(bytes(bzv))
    (directory / "ot.bzs").write_bytes(bytes(bzs))
    (directory / "ot.bzz").write_bytes(bytes(bzz))


def test_read_ztext_returns_every_entry(tmp_path: Path) -> None:
    entries = ["", "header", "<w>Im</w> Anfang", "ça", "", "last verse"]
    _write_module(tmp_path / "mod", entries)
    assert read_ztext(tmp_path / "mod", "ot") == entries


def test_missing_and_corrupt_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataFileNotFoundError, match=r"ot\.bzv does not exist"):
        read_ztext(tmp_path / "none", "ot")
    _write_module(tmp_path / "mod", ["a", "b", "c"])
    (tmp_path / "mod" / "ot.bzv").write_bytes(b"\0" * 11)
    with pytest.raises(DataError, match="not a multiple of 10"):
        read_ztext(tmp_path / "mod", "ot")
    _write_module(tmp_path / "mod2", ["a", "b", "c"])
    (tmp_path / "mod2" / "ot.bzz").write_bytes(b"not zlib at all, not zlib at all")
    with pytest.raises(DataError, match="not zlib data"):
        read_ztext(tmp_path / "mod2", "ot")


def test_osis_markup_is_stripped_but_words_kept() -> None:
    markup = (
        '<div type="x-milestone" subType="x-preverse" sID="pv1"/>'
        '<title canonical="true" type="psalm">A <w lemma="strong:H4210">Psalm</w>.</title> '
        '<q marker="" who="Jesus">¶ <w lemma="x">For</w> the \\nd '
        '<divineName><w lemma="y">LORD</w></divineName> '
        '<transChange type="added">is</transChange> good'
        '<note placement="foot"><reference type="annotateRef">1.1 </reference>or, kind</note>'
        " .</q> <w>enviada</w><w>por</w>"
    )
    assert osis_to_text(markup) == "A Psalm. For the LORD is good. enviada por"
