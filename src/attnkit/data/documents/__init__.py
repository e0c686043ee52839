"""Documents for the questions and summarisation applications.

- :func:`read_folder`: the ``.txt``/``.md`` files of a folder (bad files reported, not fatal);
- :func:`load_docstrings`: the built-in collection, docstrings of the standard library and the
  installed scientific packages, with their one-line summaries held out;
- :func:`split_sentences`, :func:`split_passages`: how a document is cut;
- :func:`build_index`: passages and their embeddings, cached on disk per document digest;
- :class:`WordTokenizer`: words and punctuation, with a source-extended vocabulary for copying.
"""

from attnkit.data.documents.docstrings import (
    DocEntry,
    DocSplits,
    collect_docstrings,
    load_docstrings,
    split_docstring,
)
from attnkit.data.documents.folder import Document, FolderReport, decode_text, read_folder
from attnkit.data.documents.index import Passage, PassageIndex, build_index, encode_in_batches
from attnkit.data.documents.text import split_passages, split_sentences
from attnkit.data.documents.words import WordTokenizer, extend_source, extend_target

__all__ = [
    "DocEntry",
    "DocSplits",
    "Document",
    "FolderReport",
    "Passage",
    "PassageIndex",
    "WordTokenizer",
    "build_index",
    "collect_docstrings",
    "decode_text",
    "encode_in_batches",
    "extend_source",
    "extend_target",
    "load_docstrings",
    "read_folder",
    "split_docstring",
    "split_passages",
    "split_sentences",
]
