"""Reading a folder of ``.txt``/``.md`` documents, keeping the good files when some are bad.

``read_folder(DIR)`` walks ``DIR`` (recursively, in sorted order) and decodes every file whose
suffix is ``.txt`` or ``.md`` as UTF-8 (a UTF-8 or UTF-16 byte-order mark is honoured). A file
that cannot be read (permissions, a broken link) or is in another encoding is *not* fatal: it
is listed in :attr:`FolderReport.problems` with the reason, and the rest of the folder is kept.
Only a folder with no readable document at all raises.

Each :class:`Document` carries the SHA-256 of its bytes: the passage index keys its cache on
it, so an edited file is re-encoded and an unchanged one is not.
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from attnkit.data.errors import DataError, DataFileNotFoundError

__all__ = ["SUFFIXES", "Document", "FolderReport", "decode_text", "read_folder"]

SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Document:
    """One document: a display name (the path relative to the folder), its text and digest."""

    name: str
    text: str
    digest: str  # SHA-256 hex of the file's bytes (or of the text's UTF-8 for built-in texts)

    @classmethod
    def from_text(cls, name: str, text: str) -> Document:
        """A document that does not come from a file (the built-in docstring collection)."""
        return cls(name, text, hashlib.sha256(text.encode("utf-8")).hexdigest())


@dataclass
class FolderReport:
    """The documents read from a folder and the files that were skipped, with the reason."""

    folder: Path
    documents: list[Document]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def describe_problems(self) -> str:
        """One line per skipped file: ``"path: reason"``."""
        return "\n".join(f"{name}: {reason}" for name, reason in self.problems)


def decode_text(data: bytes, name: str) -> str:
    """``data`` as text: UTF-8 (BOM optional) or UTF-16 with a BOM.

    Raises:
        DataError: the bytes are not text in those encodings (the file and the offending byte
            offset are named), or contain NUL bytes (a binary file).
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as error:
            raise DataError(
                f"{name}: not valid UTF-16 text ({error.reason} at byte {error.start})"
            ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{name}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start} "
            f"cannot be decoded); convert it to UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None
    if "\x00" in text:
        raise DataError(f"{name}: contains NUL bytes; it looks like a binary file, not text")
    return text


def read_folder(folder: str | Path, *, suffixes: tuple[str, ...] = SUFFIXES) -> FolderReport:
    """Read every document of ``folder`` (recursively); bad files are reported, not fatal.

    Args:
        folder: a directory.
        suffixes: which file suffixes are documents (case-insensitive).

    Returns:
        A :class:`FolderReport`: the documents sorted by relative path, and ``problems``.

    Raises:
        DataFileNotFoundError: ``folder`` does not exist or is not a directory.
        DataError: no readable document in it (the skipped files and their reasons are listed).
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise DataFileNotFoundError(f"--docs folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise DataFileNotFoundError(f"--docs {str(root)!r} is not a folder")
    wanted = tuple(s.lower() for s in suffixes)
    documents: list[Document] = []
    problems: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in wanted or path.is_dir():
            continue
        name = path.relative_to(root).as_posix()
        try:
            data = path.read_bytes()
        except OSError as error:
            problems.append((name, f"cannot be read ({error.strerror or error})"))
            continue
        try:
            text = decode_text(data, name)
        except DataError as error:
            problems.append((name, str(error).removeprefix(f"{name}: ")))
            continue
        if not text.strip():
            problems.append((name, "is empty"))
            continue
        documents.append(Document(name, text, hashlib.sha256(data).hexdigest()))
    if not documents:
        found = (
            f"; skipped:\n{FolderReport(root, [], problems).describe_problems()}"
            if (problems)
            else ""
        )
        raise DataError(
            f"--docs folder {str(root)!r} holds no readable {'/'.join(suffixes)} document" + found
        )
    return FolderReport(root, documents, problems)
