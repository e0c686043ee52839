"""Reading a user's UTF-8 text table line by line, with errors that name the file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from attnkit.data.errors import DataError

__all__ = ["utf8_lines"]


def utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line of ``path``, without the line ending.

    A byte-order mark on the first line is dropped.

    Raises:
        DataError: a line is not UTF-8 (``PATH:LINE``, the byte and its column named).
        OSError: the file cannot be opened (callers check existence first).
    """
    with Path(path).open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}:{number}: not valid UTF-8 (byte {raw[error.start]:#04x} at column "
                    f"{error.start + 1}); convert the file with e.g. iconv -t UTF-8"
                ) from None
            yield number, line.rstrip("\r\n")
