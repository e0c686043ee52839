"""Sentences and passages."""

from __future__ import annotations

import pytest

from attnkit.data.documents import split_passages, split_sentences


def test_sentences_of_running_text_keep_abbreviations_together() -> None:
    text = "Compute the inverse, e.g. of a matrix.\nIt may fail! Does it?  Yes."
    assert split_sentences(text) == [
        "Compute the inverse, e.g. of a matrix.",
        "It may fail!",
        "Does it?",
        "Yes.",
    ]


def test_headings_lists_and_doctest_lines_stand_alone() -> None:
    text = (
        "# Title\n\nSome text here.\n- item one\n  continues\n- item two\n\n"
        "Parameters\n----------\na : array\n    The input.\n\n>>> f(1)\n"
    )
    assert split_sentences(text) == [
        "Title",
        "Some text here.",
        "- item one continues",
        "- item two",
        "Parameters",
        "a : array The input.",
        ">>> f(1)",
    ]


def test_passages_pack_whole_sentences_up_to_the_word_budget() -> None:
    text = "One two three. Four five. Six seven eight nine. Ten."
    assert split_passages(text, max_words=5) == [
        ["One two three.", "Four five."],
        ["Six seven eight nine.", "Ten."],
    ]
    assert split_passages("A very long sentence of seven words.", max_words=2) == [
        ["A very long sentence of seven words."]
    ]
    assert split_passages("   \n\n ") == []
    with pytest.raises(ValueError, match="max_words"):
        split_passages("x", max_words=0)
    with pytest.raises(TypeError, match="str"):
        split_sentences(None)  # type: ignore[arg-type]
