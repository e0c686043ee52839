"""The passage index of a document collection: passages, their embeddings, and an on-disk cache.

``build_index(documents, encode, ...)`` cuts each :class:`~attnkit.data.documents.folder.Document`
into passages (:func:`~attnkit.data.documents.text.split_passages`) and embeds every passage with
``encode`` (any ``list[str] -> (N, E)`` function; the questions task passes MiniLM). Encoding is
the slow part, so the result is cached in one safetensors file per collection
(``<cache>/ask/<key>.safetensors``: the embeddings as a tensor, the passages and the documents'
SHA-256 digests as metadata), written to a temporary name and renamed.

On the next build each document is looked up by ``(name, digest)``: an unchanged document reuses
its rows, an edited or new one is re-encoded, a deleted one is dropped, and the cache is
rewritten only when something changed. :attr:`PassageIndex.encoded` says which documents were
(re-)encoded, so "editing a file rebuilds the index" is observable. A document missing from
the cache is looked up in a shipped index (:mod:`~attnkit.data.documents.shipped`) before it
is encoded. When passages must be encoded, how long it will take is announced first (timed on
the first batch), then a progress bar runs.

Shape legend: N passages, E embedding size.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from attnkit.data.cache import cache_dir
from attnkit.data.documents.folder import Document
from attnkit.data.documents.shipped import ShippedIndex, read_embeddings
from attnkit.data.documents.text import split_passages
from attnkit.explain._files import write_atomic

__all__ = ["Encode", "Passage", "PassageIndex", "build_index", "encode_in_batches"]

_FORMAT = "attnkit.passage-index"
_FORMAT_VERSION = 1
Encode = Callable[[list[str]], Tensor]  # texts -> (N, E) float embeddings


@dataclass(frozen=True)
class Passage:
    """Consecutive sentences of one document; ``number`` counts passages within it from 0."""

    document: str
    number: int
    sentences: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


@dataclass
class PassageIndex:
    """Passages, their embeddings ``(N, E)``, and what the last build had to encode.

    Attributes:
        passages: every passage, grouped by document in document order.
        embeddings: ``(N, E)`` float32, row ``i`` embeds ``passages[i].text``.
        documents: the documents' names in order.
        encoded: names of the documents (re-)encoded by this build (empty: all cached).
        cache_file: where the index is cached, or ``None``.
    """

    passages: list[Passage]
    embeddings: Tensor
    documents: list[str]
    encoded: list[str] = field(default_factory=list)
    cache_file: Path | None = None
    _document_of: Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.passages)

    def document_of(self) -> Tensor:
        """``(N,)`` int64: the position in :attr:`documents` of each passage's document
        (computed once; the index is not changed after it is built)."""
        if self._document_of is None:
            where = {name: i for i, name in enumerate(self.documents)}
            self._document_of = torch.tensor(
                [where[p.document] for p in self.passages], dtype=torch.long
            )  # (N,)
        return self._document_of


def encode_in_batches(
    encode: Encode,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    on_batch: Callable[[list[str]], object] | None = None,
) -> Tensor:
    """``encode`` applied to ``texts`` in batches of similar length (less padding), rows
    returned in the order of ``texts``: ``(len(texts), E)`` float32.

    ``on_batch(texts)`` is called after each batch with the texts it encoded (a caller's
    progress bar and time estimate).

    Raises:
        ValueError: ``encode`` returns the wrong number of rows or non-finite values.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    rows: dict[int, Tensor] = {}
    for chunk in chunks:
        out = encode([texts[i] for i in chunk]).detach().float().cpu()  # (b, E)
        if out.dim() != 2 or out.shape[0] != len(chunk):
            raise ValueError(
                f"encode returned shape {tuple(out.shape)} for {len(chunk)} texts; "
                f"expected ({len(chunk)}, E)"
            )
        if not torch.isfinite(out).all():
            raise ValueError("encode returned NaN or infinite embeddings")
        rows.update(zip(chunk, out, strict=True))
        if on_batch is not None:
            on_batch([texts[i] for i in chunk])
    if not rows:
        return torch.zeros(0, 0)
    return torch.stack([rows[i] for i in range(len(texts))])  # (N, E)


def _cache_path(collection: str, encoder_id: str, max_words: int) -> Path:
    key = hashlib.sha256(
        f"{_FORMAT_VERSION}|{collection}|{encoder_id}|{max_words}".encode()
    ).hexdigest()[:24]
    return cache_dir() / "ask" / f"{key}.safetensors"


def _read(path: Path) -> tuple[dict[tuple[str, str], tuple[list[Passage], Tensor]], int] | None:
    """The cached passages and rows of each ``(name, digest)``, or ``None`` if unusable (a
    corrupt or foreign cache is rebuilt, never trusted)."""
    found = read_embeddings(path, _FORMAT, _FORMAT_VERSION)
    if found is None or "passages" not in found[0]:
        return None
    meta, documents, embeddings = found
    try:
        passages = json.loads(meta["passages"])
    except ValueError:
        return None
    out: dict[tuple[str, str], tuple[list[Passage], Tensor]] = {}
    row = 0
    for (name, digest, count), group in zip(documents, _group(passages, documents), strict=True):
        out[(name, digest)] = (
            [Passage(name, n, tuple(sentences)) for n, sentences in group],
            embeddings[row : row + count],
        )
        row += count
    if row != embeddings.shape[0]:
        return None
    return out, int(embeddings.shape[1]) if embeddings.dim() == 2 else 0


def _group(passages: list, documents: list) -> list[list]:
    groups, start = [], 0
    for _, _, count in documents:
        groups.append(passages[start : start + count])
        start += count
    return groups


def _write(
    path: Path, docs: list[tuple[str, str, int]], passages: list[Passage], embeddings: Tensor
) -> None:
    from safetensors.torch import save

    meta = {
        "format": _FORMAT,
        "version": str(_FORMAT_VERSION),
        "documents": json.dumps([list(d) for d in docs], ensure_ascii=False),
        "passages": json.dumps(
            [[p.number, list(p.sentences)] for p in passages], ensure_ascii=False
        ),
    }
    data = save({"embeddings": embeddings.contiguous()}, metadata=meta)
    try:
        write_atomic(path, data)
    except OSError:
        return  # an unwritable cache only costs time


STOP_LOSES = 256  # passages encoded per group: the most a Ctrl-C loses (seconds on a CPU)


def build_index(
    documents: Sequence[Document],
    encode: Encode,
    *,
    collection: str | None,
    encoder_id: str,
    max_words: int = 100,
    batch_size: int = 32,
    progress: bool = False,
    save_every: int = 2048,
    shipped: ShippedIndex | None = None,
    announce: Callable[[str], object] | None = None,
) -> PassageIndex:
    """Cut ``documents`` into passages and embed them, reusing the cache where it is valid.

    New or edited documents are encoded in groups of about ``save_every`` passages and the
    cache is rewritten after each group, so an interrupted first build (thousands of passages
    on a slow CPU) resumes where it stopped instead of starting again. Ctrl-C also writes the
    groups of :data:`STOP_LOSES` passages finished since, and says so through ``announce``.

    Args:
        documents: the collection (names must be unique).
        encode: ``list[str] -> (N, E)`` embeddings.
        collection: what names the cache entry (a folder's resolved path, ``"docstrings"``);
            ``None`` disables caching.
        encoder_id: identifies ``encode``'s model (a different model never reuses a cache).
        max_words: the passage size (see :func:`split_passages`).
        batch_size: texts per call to ``encode``.
        progress: show a progress bar while encoding.
        save_every: passages encoded between two writes of the cache.
        shipped: rows to take for documents the cache lacks (when name, digest and passage
            count match), instead of encoding them.
        announce: called with one line saying how many passages must be encoded and about
            how long that will take (after the first batch), when any must be.

    Raises:
        ValueError: no documents, duplicate names, no passage in any document, or
            ``save_every`` < 1.
    """
    if not documents:
        raise ValueError("build_index: no documents to index")
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise ValueError(f"save_every must be a positive integer, got {save_every!r}")
    names = [d.name for d in documents]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})[:5]
        raise ValueError(f"build_index: document names must be unique, got duplicates {duplicates}")
    path = None if collection is None else _cache_path(collection, encoder_id, max_words)
    cached = _read(path) if path is not None and path.is_file() else None
    reusable = cached[0] if cached is not None else {}
    fresh: list[tuple[int, list[Passage]]] = []
    parts: list[tuple[list[Passage], Tensor | None]] = []
    for i, doc in enumerate(documents):
        hit = reusable.get((doc.name, doc.digest))
        if hit is not None:
            parts.append(hit)
            continue
        passages = [
            Passage(doc.name, n, tuple(sentences))
            for n, sentences in enumerate(split_passages(doc.text, max_words=max_words))
        ]
        rows = shipped.lookup(doc.name, doc.digest, len(passages)) if shipped else None
        parts.append((passages, rows))
        if rows is None:
            fresh.append((i, passages))
    if not any(passages for passages, _ in parts):
        raise ValueError(f"build_index: no text to index in {len(documents)} documents")
    groups = _groups(fresh, min(save_every, STOP_LOSES))
    watch = _Watch(fresh, progress=progress, announce=announce)
    unsaved = 0  # passages encoded since the cache was last written
    try:
        for g, group in enumerate(groups):
            texts = [p.text for _, passages in group for p in passages]
            rows = encode_in_batches(
                encode, texts, batch_size=batch_size, on_batch=watch.batch
            )  # (n, E)
            start = 0
            for i, passages in group:
                parts[i] = (passages, rows[start : start + len(passages)])  # (n_i, E)
                start += len(passages)
            unsaved += len(texts)
            if path is not None and g + 1 < len(groups) and unsaved >= save_every:
                _write_parts(path, documents, parts)  # what is encoded so far survives a stop
                unsaved = 0
    except KeyboardInterrupt:  # Ctrl-C: keep every finished group, say how to go on
        if path is not None and unsaved:
            _write_parts(path, documents, parts)
        watch.close()  # the bar first, or clearing it would wipe the line below
        if path is not None and announce is not None:
            done = sum(len(ps) for i, ps in fresh if parts[i][1] is not None)
            announce(
                f"interrupted: {done:,} of {watch.total:,} passages are encoded and cached; "
                "the same command continues from there"
            )
        raise
    finally:
        watch.close()
    all_passages = [p for passages, _ in parts for p in passages]
    embeddings = torch.cat(_rows(parts))  # (N, E)
    changed = len(reusable) != len(documents) or any(
        reusable.get((d.name, d.digest)) is None for d in documents
    )
    if path is not None and changed:
        _write_parts(path, documents, parts)
    return PassageIndex(
        all_passages, embeddings, names, [documents[i].name for i, _ in fresh], path
    )


class _Watch:
    """The progress of encoding: after the first batch, when more remain, one line with the
    time it will take (measured per character of text on this machine), then a progress bar."""

    def __init__(
        self,
        fresh: list[tuple[int, list[Passage]]],
        *,
        progress: bool,
        announce: Callable[[str], object] | None,
    ) -> None:
        self.total = sum(len(passages) for _, passages in fresh)
        self.chars = sum(len(p.text) for _, passages in fresh for p in passages)
        self.progress, self.announce = progress, announce
        self.start = time.monotonic()
        self.done_chars = self.done = 0
        self.bar = None
        self.announced = False

    def batch(self, texts: list[str]) -> None:
        self.done_chars += sum(len(t) for t in texts)
        self.done += len(texts)
        if not self.announced and self.done < self.total:  # more to come: say how long
            self.announced = True
            seconds = (time.monotonic() - self.start) * self.chars / self.done_chars
            if self.announce is not None:
                self.announce(
                    f"encoding {self.total:,} passages that are not indexed yet: about "
                    f"{_duration(seconds)} on this machine (once; later runs reuse them)"
                )
            if self.progress:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=self.total, initial=self.done, desc="encoding passages",
                                unit="passage", leave=False)
            return
        if self.bar is not None:
            self.bar.update(len(texts))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _groups(
    fresh: list[tuple[int, list[Passage]]], size: int
) -> list[list[tuple[int, list[Passage]]]]:
    """``fresh`` documents in consecutive groups of about ``size`` passages."""
    groups: list[list[tuple[int, list[Passage]]]] = []
    current: list[tuple[int, list[Passage]]] = []
    count = 0
    for item in fresh:
        current.append(item)
        count += len(item[1])
        if count >= size:
            groups.append(current)
            current, count = [], 0
    if current:
        groups.append(current)
    return groups


def _rows(parts: list[tuple[list[Passage], Tensor | None]]) -> list[Tensor]:
    """Each part's ``(n_i, E)`` rows; a part with no passages gives ``(0, E)``."""
    width = next(rows.shape[1] for _, rows in parts if rows is not None and rows.numel())
    return [
        rows if rows is not None and rows.numel() else torch.zeros(0, width) for _, rows in parts
    ]


def _write_parts(
    path: Path,
    documents: Sequence[Document],
    parts: list[tuple[list[Passage], Tensor | None]],
) -> None:
    """Cache the documents whose rows are known (the others are left for the next build)."""
    done = [(d, p) for d, p in zip(documents, parts, strict=True) if p[1] is not None]
    if not done or not any(passages for _, (passages, _) in done):
        return
    docs = [(d.name, d.digest, len(passages)) for d, (passages, _) in done]
    passages = [p for _, (ps, _) in done for p in ps]
    _write(path, docs, passages, torch.cat(_rows([p for _, p in done])))  # (N_done, E)
