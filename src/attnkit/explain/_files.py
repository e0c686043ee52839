"""Writing output files atomically: to a temporary name in the same folder, then renamed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def as_path(path: str | os.PathLike[str], *, suffix: str, argument: str = "path") -> Path:
    """``path`` as a :class:`Path`; raises ``TypeError`` for anything else and ``ValueError``
    when its suffix is not ``suffix`` (case-insensitive) or it names a folder."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise ValueError(f"{argument} must end in {suffix!r}, got {str(p)!r}")
    if p.is_dir():
        raise ValueError(f"{argument} names a folder, not a file: {str(p)!r}")
    return p


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file renamed over it (creating parent
    folders). A reader never sees a half-written file; on failure nothing is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno and error.filename is None:  # disk full
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    return path
