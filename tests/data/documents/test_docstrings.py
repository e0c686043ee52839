"""The built-in docstring collection: summaries held out, leaks removed, splits stable."""

from __future__ import annotations

import pytest

from attnkit.data.documents import collect_docstrings, load_docstrings, split_docstring
from attnkit.data.documents import docstrings as docstrings_module

NUMPYDOC = """add(x1, x2, /, out=None)

Add arguments element-wise, see :func:`numpy.subtract`.

Given two arrays ``x1`` and ``x2`` of the same shape, return their sum.

Parameters
----------
x1, x2 : array_like
    The arrays to be added.

See Also
--------
subtract : Subtract arguments, element-wise.

Examples
--------
>>> np.add(1.0, 4.0)
5.0

Notes
-----
Equivalent to x1 + x2 in terms of array broadcasting.
"""


def test_summary_is_held_out_and_leaky_sections_are_dropped() -> None:
    summary, body = split_docstring(NUMPYDOC)
    assert summary == "Add arguments element-wise, see numpy.subtract."  # signature skipped
    assert "Given two arrays x1 and x2" in body  # reST literals reduced to text
    assert "Subtract arguments" not in body  # another object's summary (See Also)
    assert "np.add(1.0" not in body and "Examples" not in body
    assert "Equivalent to x1 + x2" in body  # sections after the dropped ones come back
    assert summary not in body


def test_summary_line_without_blank_line_and_torch_example_blocks() -> None:
    doc = "Return the frobnicated value.\nThe value is frobnicated in place and returned to you.\n\nExample::\n\n    >>> frob(1)\n    2\n\nMore text after."
    summary, body = split_docstring(doc)
    assert summary == "Return the frobnicated value."
    assert "frob(1)" not in body and "More text after." in body


@pytest.mark.parametrize(
    "doc",
    [
        "Too short.\n\nA body that is long enough to be kept as a document.",
        "Summary only here.",
        "",
    ],
)
def test_unusable_docstrings_are_rejected(doc: str) -> None:
    assert split_docstring(doc) is None


def test_collect_real_modules_without_duplicates() -> None:
    entries = collect_docstrings(["json", "statistics"])
    assert len(entries) > 10
    assert all(e.name.split(".")[0] in ("json", "statistics") for e in entries)
    summaries = [e.summary.lower() for e in entries]
    assert len(set(summaries)) == len(summaries)
    assert all(e.summary not in e.body.splitlines() for e in entries)


def test_splits_are_disjoint_deterministic_and_cached(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNKIT_CACHE_DIR", str(tmp_path))
    modules = ["json", "statistics", "csv", "heapq"]
    first = load_docstrings(modules=modules, valid=0.1, test=0.2)
    names = [{e.name for e in part} for part in (first.train, first.valid, first.test)]
    assert all(names) and not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(docstrings_module, "collect_docstrings", fail)
    second = load_docstrings(modules=modules, valid=0.1, test=0.2)
    assert second == first
