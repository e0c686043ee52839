"""Atomic output files: a failed write leaves nothing and says which file."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from attnkit.explain import _files


def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    # ENOSPC from write()/fsync() names no file: `attnkit explain` said only
    # "[Errno 28] No space left on device"
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files.os, "fsync", full)
    target = tmp_path / "out" / "attention.html"
    with pytest.raises(OSError) as raised:
        _files.write_atomic(target, b"<html>")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert list(target.parent.iterdir()) == []
