"""A shipped index: documents it holds (same name, text and passage count) are not encoded;
the others are, after one line saying how long that will take."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.data.documents import Document, build_index
from attnkit.data.documents.shipped import ShippedIndex, quantize, write_shipped_index
from tests.data.documents.test_index import CountingEncoder

DOCS = [
    Document.from_text("a", "Mountains are tall. Snow lies on them all winter."),
    Document.from_text("b", "Rivers flow to the sea."),
    Document.from_text("c", "Deserts are dry and hot by day."),
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNKIT_CACHE_DIR", str(tmp_path / "cache"))


def test_int8_rows_keep_every_cosine_within_3e_3() -> None:
    torch.manual_seed(0)
    rows = torch.randn(50, 384)
    back = quantize(rows).float()
    cos = F.cosine_similarity(rows[:, None], rows[None], dim=-1)  # (50, 50)
    cos_q = F.cosine_similarity(back[:, None], back[None], dim=-1)
    assert (cos - cos_q).abs().max() < 3e-3
    assert quantize(rows).dtype == torch.int8


def test_documents_in_the_shipped_index_are_not_encoded(tmp_path) -> None:
    full = build_index(DOCS, CountingEncoder(), collection=None, encoder_id="e", max_words=4)
    counts = {d.name: sum(p.document == d.name for p in full.passages) for d in DOCS}
    path = write_shipped_index(
        tmp_path / "index.safetensors", [(d.name, d.digest, counts[d.name]) for d in DOCS[:2]],
        full.embeddings[: counts["a"] + counts["b"]], encoder="e", max_words=4,
    )
    shipped = ShippedIndex.read(path)
    assert shipped is not None and shipped.max_words == 4
    edited = Document.from_text("b", "Rivers flow to the sea, slowly.")  # its digest changed
    encoder, heard = CountingEncoder(), []
    index = build_index([DOCS[0], edited, DOCS[2]], encoder, collection="x", encoder_id="e",
                        max_words=4, shipped=shipped, announce=heard.append, batch_size=1)
    assert index.encoded == ["b", "c"]  # "a" came from the shipped rows
    assert not any("Snow" in text for text in encoder.seen)
    rows_a = index.embeddings[: counts["a"]]
    torch.testing.assert_close(
        F.cosine_similarity(rows_a, full.embeddings[: counts["a"]]),
        torch.ones(counts["a"]), atol=1e-3, rtol=0,
    )
    [line] = heard
    assert line.startswith(f"encoding {len(index) - counts['a']} passages that are not indexed yet: "
                           "about ") and "on this machine" in line
    # The cache now holds all three: nothing is encoded or announced again.
    again, heard = CountingEncoder(), []
    build_index([DOCS[0], edited, DOCS[2]], again, collection="x", encoder_id="e", max_words=4,
                shipped=shipped, announce=heard.append)
    assert again.seen == [] and heard == []


def test_a_missing_or_foreign_file_is_no_index(tmp_path) -> None:
    assert ShippedIndex.read(tmp_path / "nothing.safetensors") is None
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    assert ShippedIndex.read(tmp_path / "bad.safetensors") is None


def test_the_shipped_index_covers_the_built_in_collection() -> None:
    """With the pinned packages every built-in docstring is in the shipped index (else rebuild
    it: python -m attnkit.tasks.ask_index), and the file stays small."""
    from attnkit.data.documents import load_docstrings, split_passages
    from attnkit.data.documents.shipped import SHIPPED_INDEX
    from attnkit.tasks.ask import MAX_WORDS, shipped_index

    assert SHIPPED_INDEX.stat().st_size < 8e6
    shipped = shipped_index()
    assert shipped is not None  # fits the installed MiniLM and the passage size
    s = load_docstrings()
    documents = [Document.from_text(e.name, e.body) for e in s.train + s.valid + s.test]
    missing = [
        d.name for d in documents
        if shipped.lookup(d.name, d.digest, len(split_passages(d.text, max_words=MAX_WORDS)))
        is None
    ]
    # A docstring that prints a set (scipy.signal.lombscargle's deprecation note) changes with
    # Python's hash seed from one process to the next; such a one is encoded on first use.
    assert len(missing) <= 3, f"{len(missing)} documents missing, e.g. {missing[:3]}"
