"""Errors raised by the data layer.

Every problem with a data set (a missing file, a malformed line, an unknown source or
language pair, a Debian package that is not installed) raises one of these, with a message
that names the file, the line and what was expected.
"""

from __future__ import annotations

__all__ = ["DataError", "DataFileNotFoundError", "MissingPackageError"]


class DataError(ValueError):
    """Bad or unusable data, or a bad data spec (a subclass of ``ValueError``)."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file or directory does not exist (also a ``FileNotFoundError``)."""


class MissingPackageError(DataFileNotFoundError):
    """The data ships in a system package that is not installed.

    The message says which ``apt-get install`` (or ``pip install``) command provides it.
    """
