"""A small on-disk cache for parsed data sets (JSON, gzip-compressed, written atomically).

The cache directory is ``$ATTNKIT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/attnkit``, else
``~/.cache/attnkit``. Each entry stores a fingerprint of its inputs (file sizes and
modification times, parser version); a stale, corrupt or unreadable entry is ignored and
rebuilt, never trusted.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "file_fingerprint", "read_cache", "write_cache"]


def cache_dir() -> Path:
    """The attnkit cache directory (not created here)."""
    env = os.environ.get("ATTNKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "attnkit"


def file_fingerprint(paths: list[Path]) -> list[list[Any]]:
    """``[name, size, mtime_ns]`` of each file: changes when a package is upgraded."""
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def read_cache(name: str, fingerprint: Any) -> Any | None:
    """The cached payload stored under ``name`` if its fingerprint matches, else ``None``."""
    path = cache_dir() / f"{name}.json.gz"
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            entry = json.load(fh)
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(entry, dict) or entry.get("fingerprint") != json.loads(
        json.dumps(fingerprint)
    ):
        return None
    return entry.get("payload")


def write_cache(name: str, fingerprint: Any, payload: Any) -> Path | None:
    """Store ``payload`` (JSON-serialisable) under ``name``; returns the path.

    Written to a temporary file in the cache directory and renamed into place, so a reader
    never sees a half-written entry. A cache that cannot be written (read-only home) is
    skipped silently: it only costs time. Returns ``None`` then.
    """
    directory = cache_dir()
    final = directory / f"{name}.json.gz"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as raw, gzip.open(raw, "wt", encoding="utf-8") as fh:
                json.dump({"fingerprint": fingerprint, "payload": payload}, fh,
                          ensure_ascii=False)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return None
    return final
