"""Checkpoint directories on disk: atomic writes, checksums, and the ``last``/``best`` pointers.

A run directory looks like::

    runs/NAME/
        checkpoints/step-00000120/     one complete checkpoint (files + manifest.json)
        checkpoints/step-00000200/
        last                           text file: "checkpoints/step-00000200"
        best                           text file: "checkpoints/step-00000120"

A checkpoint is written into ``checkpoints/.tmp-*``, flushed to disk, then renamed into place;
only then is a pointer replaced (``os.replace`` of a small file, atomic on POSIX and Windows),
and only then are checkpoints no pointer names deleted. A crash at any point leaves both
pointers naming complete, checksummed directories; leftovers are removed by the next save.
One process writes a run directory at a time.

This module knows nothing of models: files are bytes. ``checkpoint.py`` decides what they hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "attnkit-checkpoint"
FORMAT_VERSION = 1
POINTERS = ("last", "best")
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint is missing a file, truncated, corrupted, or does not fit the model."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; its renames are durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file and flush it to disk."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def write_checkpoint_dir(parent: Path, name: str, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` and a ``manifest.json`` of their SHA-256 as ``parent/name``, atomically.

    ``name`` gets a ``-1``, ``-2``, ... suffix when taken. On any failure the temporary
    directory is removed and the error re-raised: no partial checkpoint is ever visible.

    Raises:
        ValueError: a file name that is not a plain name, or is ``manifest.json``.
        OSError: the disk refused (the temporary directory is cleaned up first); it names
            ``parent/name`` when the system's error named no file (a full disk).
    """
    for file_name in files:
        if file_name == MANIFEST or Path(file_name).name != file_name or file_name.startswith("."):
            raise ValueError(f"checkpoint file names must be plain names, got {file_name!r}")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        entries = {}
        for file_name, data in files.items():
            _write_file(tmp / file_name, data)
            entries[file_name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "files": entries}
        manifest_text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        _write_file(tmp / MANIFEST, manifest_text.encode("utf-8"))
        _fsync_dir(tmp)
        final = parent / name
        suffix = 0
        while final.exists():
            suffix += 1
            final = parent / f"{name}-{suffix}"
        os.rename(tmp, final)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError) and error.errno and error.filename is None:  # disk full
            raise OSError(error.errno, error.strerror, str(parent / name)) from error
        raise
    _fsync_dir(parent)
    return final


def read_format_json(
    path: Path, fmt: str, version: int, what: str, error: type[Exception] = ValueError
) -> dict[str, Any]:
    """The JSON object in the file ``path`` whose ``format`` is ``fmt`` and ``version`` is
    ``version`` (``what`` names such a file in messages: ``"an attnkit checkpoint manifest"``).

    Raises:
        error: not UTF-8 JSON, not such an object, or another version.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{path} is corrupted (not valid JSON): {problem}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise error(f"{path} is not {what}")
    if data.get("version") != version:
        raise error(
            f"{path} has format version {data.get('version')!r}; this attnkit reads "
            f"version {version}"
        )
    return data


def read_manifest(path: Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of checkpoint ``path``.

    Raises:
        CheckpointError: it is missing (an incomplete write) or unreadable.
    """
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{manifest_path} is missing: {path} is not a complete attnkit checkpoint"
        )
    manifest = read_format_json(
        manifest_path, FORMAT, FORMAT_VERSION, "an attnkit checkpoint manifest", CheckpointError
    )
    files = manifest.get("files")
    well_formed = isinstance(files, dict) and all(
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("bytes"), int)
        for entry in files.values()
    )
    if not well_formed:
        raise CheckpointError(f"{manifest_path} is corrupted: its 'files' entries are malformed")
    return manifest


def _check_entry(path: Path, file_name: str, entry: Mapping[str, Any], sha: str, size: int) -> None:
    expected = int(entry["bytes"])
    if size < expected:
        raise CheckpointError(
            f"{path / file_name} is truncated: {size} bytes, the manifest says {expected}"
        )
    if size > expected or sha != entry["sha256"]:
        raise CheckpointError(
            f"{path / file_name} is corrupted: its SHA-256 does not match the manifest "
            f"({size} bytes, expected {expected})"
        )


def verify_checkpoint_dir(path: Path) -> dict[str, Any]:
    """Check every file of the manifest is present, complete and unchanged; return the manifest.

    Raises:
        CheckpointError: naming the first file that is missing, truncated or corrupted.
    """
    manifest = read_manifest(path)
    for file_name, entry in manifest["files"].items():
        file_path = path / file_name
        if not file_path.is_file():
            raise CheckpointError(f"{file_path} is missing (listed in {path / MANIFEST})")
        sha, size = _sha256_file(file_path)
        _check_entry(path, file_name, entry, sha, size)
    return manifest


def read_verified(path: Path, file_name: str, manifest: Mapping[str, Any]) -> bytes:
    """The bytes of ``path/file_name``, checked against the manifest as they are read.

    Raises:
        CheckpointError: the file is not in the manifest, missing, truncated or corrupted.
    """
    entry = manifest["files"].get(file_name)
    if entry is None:
        raise CheckpointError(f"{path} has no {file_name} (not in its manifest)")
    try:
        data = (path / file_name).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path / file_name} is missing (listed in the manifest)") from None
    _check_entry(path, file_name, entry, hashlib.sha256(data).hexdigest(), len(data))
    return data


class RunDir:
    """The checkpoints of one run, with ``last`` and ``best`` pointers (see the module doc)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"

    def pointer(self, which: str) -> Path | None:
        """The checkpoint directory ``last`` or ``best`` names, or ``None`` when unset.

        Raises:
            ValueError: ``which`` is not ``"last"`` or ``"best"``.
            CheckpointError: the pointer names a directory that does not exist.
        """
        if which not in POINTERS:
            raise ValueError(f"which must be one of {POINTERS}, got {which!r}")
        pointer = self.root / which
        if not pointer.is_file():
            return None
        return resolve_pointer(pointer)

    def save(self, step: int, files: Mapping[str, bytes], *, best: bool) -> Path:
        """Write a checkpoint, point ``last`` (and ``best`` when ``best``) at it, drop the rest."""
        path = write_checkpoint_dir(self.checkpoints, f"step-{step:08d}", files)
        relative = path.relative_to(self.root).as_posix()
        self._set_pointer("last", relative)
        if best:
            self._set_pointer("best", relative)
        self.collect_garbage()
        return path

    def _set_pointer(self, which: str, relative: str) -> None:
        tmp = self.root / f".{which}.tmp-{secrets.token_hex(4)}"
        try:
            _write_file(tmp, (relative + "\n").encode("utf-8"))
            os.replace(tmp, self.root / which)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)

    def collect_garbage(self) -> None:
        """Delete checkpoint directories no pointer names and leftovers of crashed writes.

        Nothing is deleted while a pointer cannot be read: what it meant is then unknown.
        """
        keep = set()
        for which in POINTERS:
            try:
                target = self.pointer(which)
            except CheckpointError:
                return
            if target is not None:
                keep.add(target.resolve())
        if self.checkpoints.is_dir():
            for entry in self.checkpoints.iterdir():
                if entry.resolve() not in keep and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
        for entry in self.root.glob(".*.tmp-*"):
            entry.unlink(missing_ok=True)


def resolve_pointer(pointer: Path) -> Path:
    """The checkpoint directory a ``last``/``best`` pointer file names.

    Raises:
        CheckpointError: the pointer is unreadable or names a directory that does not exist.
    """
    try:
        relative = pointer.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise CheckpointError(f"{pointer} is corrupted (not a checkpoint pointer)") from None
    if not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise CheckpointError(f"{pointer} is corrupted: it names {relative!r}")
    target = pointer.parent / relative
    if not target.is_dir():
        raise CheckpointError(f"{pointer} names {target}, which does not exist")
    return target


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Find the checkpoint directory meant by ``path``.

    ``path`` may be a checkpoint directory, a ``last``/``best`` pointer file, or a run
    directory (its ``last`` checkpoint).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` is none of the above.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: it does not exist")
    if path.is_file():
        return resolve_pointer(path)
    if (path / MANIFEST).is_file():
        return path
    if (path / "last").is_file():
        return resolve_pointer(path / "last")
    raise CheckpointError(
        f"{path} is not a checkpoint: it has no {MANIFEST} (an incomplete write?) and no "
        f"'last' pointer"
    )
