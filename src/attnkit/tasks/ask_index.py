"""Build the passage index that ships with attnkit for ``attnkit ask`` without ``--docs``.

    python -m attnkit.tasks.ask_index [PATH]

encodes every passage of the built-in docstring collection with MiniLM (reusing the user's
cache of ``attnkit ask``; a first build takes 30-60 minutes on 2 cores) and writes the int8
index (:mod:`attnkit.data.documents.shipped`) to PATH, by default the file the package reads.
Rebuild it when the pinned versions of the documented packages (requirements.lock), the
docstring extraction, the passage size or the encoder change: documents whose text changed
are then encoded on the user's machine instead, with the wait announced.
"""

from __future__ import annotations

import sys
from pathlib import Path

from attnkit.data.documents import Document, load_docstrings
from attnkit.data.documents.shipped import SHIPPED_INDEX, file_fingerprint, write_shipped_index
from attnkit.tasks.ask import MAX_WORDS, Asker


def build(path: Path = SHIPPED_INDEX) -> Path:
    """Encode (or read from the cache) the built-in collection and write the shipped index."""
    from attnkit.models.bert import default_model_path

    s = load_docstrings()
    documents = [Document.from_text(e.name, e.body) for e in s.train + s.valid + s.test]
    asker = Asker.from_documents(documents, collection="docstrings:all", progress=True,
                                 announce=print)
    counts: dict[str, int] = {}
    for passage in asker.index.passages:
        counts[passage.document] = counts.get(passage.document, 0) + 1
    rows = [(d.name, d.digest, counts.get(d.name, 0)) for d in documents]
    encoder = file_fingerprint(default_model_path() / "model.safetensors")
    return write_shipped_index(
        path, rows, asker.index.embeddings, encoder=encoder, max_words=MAX_WORDS
    )


if __name__ == "__main__":
    out = build(Path(sys.argv[1]) if len(sys.argv) > 1 else SHIPPED_INDEX)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
