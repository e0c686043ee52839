"""Read SWORD zText Bible modules (as shipped by Debian's ``sword-text-*`` packages).

Format (per testament ``ot`` / ``nt`` in the module directory; all integers little-endian):

* ``.bzv``: one 10-byte entry per index, ``(block u32, offset u32, size u16)``;
* ``.bzs``: one 12-byte entry per block, ``(offset u32, compressed u32, raw u32)`` into
  ``.bzz``;
* ``.bzz``: the blocks, each a zlib stream; a verse is ``size`` bytes at ``offset`` in
  its decompressed block, UTF-8 OSIS markup.

Index layout (KJV versification): 0 = module heading, 1 = testament heading, then per book a
book heading, and per chapter a chapter heading followed by its verses. Book and chapter
headings are recognised by their OSIS markup (``<div type="book" sID=..>``,
``<chapter osisID="Gen.1" sID=..>``) and the result is checked against the expected counts.
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from attnkit.data.errors import DataError, DataFileNotFoundError

__all__ = ["Verse", "osis_to_text", "read_verses", "read_ztext"]

_VERSE_ENTRY = struct.Struct("<IIH")  # block, offset, size
_BLOCK_ENTRY = struct.Struct("<III")  # offset in .bzz, compressed size, raw size

# Verses per testament in the KJV versification, used to check the index layout.
KJV_VERSES = {"ot": 23145, "nt": 7957}

_TAG = re.compile(r"<(/?)([A-Za-z]+)\b([^>]*?)(/?)>")
_CHAPTER_START = re.compile(r'<chapter\b(?=[^>]*\bsID=)[^>]*\bosisID="([^".]+)\.(\d+)"')
_BOOK_START = re.compile(r'<div\b(?=[^>]*\btype="book")(?=[^>]*\bsID=)[^>]*>')
_NOTE = re.compile(r"<note\b[^>]*?(?<!/)>.*?</note>", re.S)
_MAIN_TITLE = re.compile(r'<title\b(?=[^>]*\btype="main")[^>]*>.*?</title>', re.S)
_GLUED_WORDS = re.compile(r"</(w|transChange)>(?=<(?:w|transChange)\b)")
_USFM_MARKER = re.compile(r"\\\+?[a-z]+\d?\*?\s?")  # stray "\nd " markers left in KJV text
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:?!)\]])")


@dataclass(frozen=True)
class Verse:
    """One verse: ``ref`` is its OSIS reference (``"John.3.16"``), ``text`` plain text."""

    ref: str
    book: str
    chapter: int
    verse: int
    text: str


def read_ztext(module_dir: Path, testament: str) -> list[str]:
    """All raw entries (OSIS markup, ``""`` for empty ones) of one testament of a module.

    Raises:
        DataFileNotFoundError: a ``.bzv``/``.bzs``/``.bzz`` file is missing.
        DataError: a truncated or corrupt file (the message names it).
    """
    paths = {ext: module_dir / f"{testament}.{ext}" for ext in ("bzv", "bzs", "bzz")}
    for path in paths.values():
        if not path.is_file():
            raise DataFileNotFoundError(f"SWORD module file {path} does not exist")
    bzv, bzs, bzz = (paths[e].read_bytes() for e in ("bzv", "bzs", "bzz"))
    for ext, data, size in (("bzv", bzv, 10), ("bzs", bzs, 12)):
        if len(data) % size:
            raise DataError(f"{paths[ext]}: size {len(data)} is not a multiple of {size} bytes")
    blocks = [_BLOCK_ENTRY.unpack_from(bzs, i) for i in range(0, len(bzs), 12)]
    decoded: dict[int, bytes] = {}
    entries = []
    for index, pos in enumerate(range(0, len(bzv), 10)):
        block, offset, size = _VERSE_ENTRY.unpack_from(bzv, pos)
        if size == 0:
            entries.append("")
            continue
        if block not in decoded:
            if block >= len(blocks):
                raise DataError(f"{paths['bzv']}: entry {index} points to missing block {block}")
            start, compressed, raw = blocks[block]
            try:
                data = zlib.decompress(bzz[start:start + compressed])
            except zlib.error as exc:
                raise DataError(f"{paths['bzz']}: block {block} is not zlib data ({exc})") from None
            if len(data) != raw:
                raise DataError(
                    f"{paths['bzz']}: block {block} has {len(data)} bytes, index says {raw}"
                )
            decoded[block] = data
        chunk = decoded[block][offset:offset + size]
        try:
            entries.append(chunk.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(f"{paths['bzv']}: entry {index} is not UTF-8 ({exc})") from None
    return entries


def osis_to_text(markup: str) -> str:
    """Plain text of one verse's OSIS markup.

    Drops notes (``<note>..</note>``), book titles and all tags; keeps the words inside
    ``<w>``, ``<transChange>`` (the KJV's italics), ``<divineName>``, ``<q>`` and canonical
    titles (psalm superscriptions, epistle subscriptions), because the other translation
    keeps them inline. Removes the pilcrow and stray USFM markers, unescapes entities and
    normalises spaces.
    """
    text = _NOTE.sub("", markup)
    text = _MAIN_TITLE.sub("", text)
    text = _GLUED_WORDS.sub(r"</\1> ", text)  # two word elements with no space between
    text = _TAG.sub("", text)
    text = _USFM_MARKER.sub("", text)
    text = html.unescape(text).replace("¶", " ")
    text = " ".join(text.split())
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def read_verses(module_dir: Path, testament: str) -> list[Verse | None]:
    """The verses of one testament, in index order, with their OSIS references.

    Element ``i`` is the verse at verse position ``i`` of the KJV versification of that
    testament (0-based), or ``None`` when the module leaves it empty; two modules with the
    same versification therefore align element by element.

    Raises:
        DataError: the book/chapter headings do not give the expected number of verses.
    """
    entries = read_ztext(module_dir, testament)
    verses: list[Verse | None] = []
    book, chapter, number = "", 0, 0
    for raw in entries[2:]:  # 0 = module heading, 1 = testament heading
        found = _CHAPTER_START.search(raw)
        if found:
            book, chapter, number = found.group(1), int(found.group(2)), 0
            continue
        if _BOOK_START.search(raw) or not book:
            book, chapter = "", 0  # a book heading; its first chapter heading follows
            continue
        number += 1
        text = osis_to_text(raw)
        ref = f"{book}.{chapter}.{number}"
        verses.append(Verse(ref, book, chapter, number, text) if text else None)
    expected = KJV_VERSES.get(testament)
    if expected is not None and len(verses) != expected:
        raise DataError(
            f"{module_dir}/{testament}: found {len(verses)} verses, the KJV versification "
            f"has {expected}; not a KJV-versified zText module?"
        )
    return verses
