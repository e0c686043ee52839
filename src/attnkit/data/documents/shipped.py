"""A passage index shipped with attnkit, so that a collection needs no encoding on first use.

``attnkit ask`` without ``--docs`` searches the built-in docstring collection: 15,882
passages, 13 to 35 minutes of MiniLM encoding on a 2-core CPU. Its embeddings therefore ship
in the package (``docstrings_index.safetensors`` beside this module, built by
``python -m attnkit.tasks.ask_index``), small enough for a repository:

- one ``int8`` row per passage: the MiniLM embedding divided by its largest absolute value
  and scaled to ±127, rounded. Cosine attention only needs each row's direction, so no scale
  is stored; the rounding moves a cosine by at most a few thousandths (docs/experiments.md
  measures the retrieval accuracy with both);
- per document its name, the first 16 hex digits of its SHA-256 and its passage count;
- what the rows depend on: the encoder (its weights' size and SHA-256 prefix) and the passage
  size in words.

A document is taken from the shipped index only when its name, digest and passage count all
match (the installed packages' docstrings are those the index was built from); any other is
encoded as before. Nothing here is trusted blindly: a file that does not parse is ignored.

Shape legend: N passages, E embedding size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from attnkit.explain._files import write_atomic

__all__ = ["SHIPPED_INDEX", "ShippedIndex", "file_fingerprint", "write_shipped_index"]

SHIPPED_INDEX = Path(__file__).with_name("docstrings_index.safetensors")
_FORMAT = "attnkit.shipped-passage-index"
_VERSION = 1
_DIGEST = 16  # hex digits of a document's SHA-256 kept


def file_fingerprint(path: Path) -> str:
    """``"<bytes>:<SHA-256 prefix>"`` of a file: names an encoder's weights portably."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return f"{path.stat().st_size}:{digest.hexdigest()[:16]}"


def read_embeddings(
    path: Path, format_name: str, version: int
) -> tuple[dict[str, str], list, Tensor] | None:
    """The metadata, the parsed ``documents`` list and the ``embeddings`` tensor of a
    safetensors index of ``format_name`` and ``version``, or ``None`` when it is missing,
    unreadable or of another kind (such a file is rebuilt or ignored, never trusted)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            embeddings = fh.get_tensor("embeddings")
        if meta.get("format") != format_name or int(meta.get("version", -1)) != version:
            return None
        documents = json.loads(meta["documents"])
    except Exception:  # safetensors raises its own SafetensorError; any failure: not used
        return None
    return meta, documents, embeddings


def quantize(rows: Tensor) -> Tensor:
    """``(N, E)`` float rows as int8, each divided by its largest absolute value × 127."""
    scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)  # (N, 1)
    return (rows / scale * 127.0).round().to(torch.int8)


@dataclass
class ShippedIndex:
    """The rows of a shipped index, looked up per document.

    Attributes:
        encoder: the fingerprint of the encoder that made the rows.
        max_words: the passage size.
        rows: ``{(name, digest prefix): (passage count, (n, E) float32 rows)}``.
    """

    encoder: str
    max_words: int
    rows: dict[tuple[str, str], tuple[int, Tensor]]

    @classmethod
    def read(cls, path: Path = SHIPPED_INDEX) -> ShippedIndex | None:
        """The index at ``path``, or ``None`` when it is missing or unreadable."""
        found = read_embeddings(path, _FORMAT, _VERSION)
        if found is None or "encoder" not in found[0] or "max_words" not in found[0]:
            return None
        meta, documents, embeddings = found
        if not meta["max_words"].isdigit():
            return None
        encoder, max_words = meta["encoder"], int(meta["max_words"])
        values = embeddings.float()  # (N, E)
        rows, start = {}, 0
        for name, digest, count in documents:
            rows[(name, digest)] = (count, values[start : start + count])
            start += count
        if start != values.shape[0]:
            return None
        return cls(encoder, max_words, rows)

    def lookup(self, name: str, digest: str, count: int) -> Tensor | None:
        """The ``(count, E)`` rows of a document, or ``None`` unless name, digest and passage
        count all match."""
        found = self.rows.get((name, digest[:_DIGEST]))
        if found is None or found[0] != count:
            return None
        return found[1]


def write_shipped_index(
    path: Path,
    documents: Sequence[tuple[str, str, int]],
    embeddings: Tensor,
    *,
    encoder: str,
    max_words: int,
) -> Path:
    """Write ``documents`` (``(name, SHA-256, passage count)`` in row order) and their
    ``(N, E)`` embeddings as a shipped index (atomically).

    Raises:
        ValueError: the counts do not add up to ``N``.
    """
    if sum(count for _, _, count in documents) != embeddings.shape[0]:
        raise ValueError(
            f"the documents' passage counts add up to {sum(c for _, _, c in documents)}, "
            f"but there are {embeddings.shape[0]} rows"
        )
    from safetensors.torch import save

    meta = {
        "format": _FORMAT,
        "version": str(_VERSION),
        "encoder": encoder,
        "max_words": str(max_words),
        "documents": json.dumps(
            [[name, digest[:_DIGEST], count] for name, digest, count in documents],
            ensure_ascii=False, separators=(",", ":"),
        ),
    }
    return write_atomic(path, save({"embeddings": quantize(embeddings)}, metadata=meta))
