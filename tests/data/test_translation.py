"""Tests for attnkit.data.translation and the source registry / spec syntax."""

from __future__ import annotations

import pytest

from attnkit.data.errors import DataError
from attnkit.data.registry import available_sources, parse_spec, register_source
from attnkit.data.translation import DEFAULT_SPEC, describe_sources, load_pairs


def test_parse_spec_splits_prefix_argument_and_options() -> None:
    assert parse_spec("num2words:de-en") == ("num2words", "de-en", {})
    assert parse_spec("num2words:de-en:max=99,valid=0.1") == (
        "num2words", "de-en", {"max": "99", "valid": "0.1"})
    # A colon inside the argument (a path) is kept when the tail has no '='.
    assert parse_spec("tsv:/tmp/a:b.tsv") == ("tsv", "/tmp/a:b.tsv", {})
    assert parse_spec("tsv:/tmp/a:b.tsv:reverse=1") == ("tsv", "/tmp/a:b.tsv", {"reverse": "1"})


@pytest.mark.parametrize("bad", ["num2words", ":de-en", "num2words:", "x:y:a=1,b"])
def test_malformed_specs_raise_data_error(bad: str) -> None:
    with pytest.raises(DataError, match=r"PREFIX:ARG|key=value|empty"):
        parse_spec(bad)


def test_repeated_option_and_non_string_spec() -> None:
    with pytest.raises(DataError, match="given twice"):
        parse_spec("num2words:de-en:max=1,max=2")
    with pytest.raises(TypeError, match="spec must be a str"):
        load_pairs(42)  # type: ignore[arg-type]


def test_unknown_prefix_lists_the_known_sources() -> None:
    with pytest.raises(DataError) as info:
        load_pairs("opus:en-de")
    message = str(info.value)
    assert "unknown data source 'opus'" in message
    for prefix in ("bible", "gettext", "num2words", "tsv"):
        assert prefix in message


def test_registry_has_the_built_in_sources_and_rejects_duplicates() -> None:
    assert {s.prefix for s in available_sources()} >= {"bible", "gettext", "num2words", "tsv"}
    assert "num2words:de-en" in describe_sources()
    with pytest.raises(ValueError, match="already registered"):
        register_source("tsv", summary="", example="")(lambda a, o, s: None)


def test_unknown_option_is_named() -> None:
    with pytest.raises(DataError, match=r"unknown option\(s\) colour"):
        load_pairs("num2words:de-en:colour=red")


def test_default_spec_and_seed_type() -> None:
    assert DEFAULT_SPEC == "num2words:de-en"
    with pytest.raises(TypeError, match="seed must be an int"):
        load_pairs(seed="1")  # type: ignore[arg-type]
