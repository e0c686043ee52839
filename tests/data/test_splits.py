"""Tests for attnkit.data.splits: key-grouped, seed-deterministic splitting."""

from __future__ import annotations

import pytest

from attnkit.data.errors import DataError
from attnkit.data.splits import Splits, drop_leaked, split_by_key, split_fractions


def test_split_by_key_keeps_each_key_in_one_split_and_covers_everything() -> None:
    items = [(k, i) for k in range(200) for i in range(3)]  # 200 keys, 3 items each
    train, valid, test = split_by_key(items, lambda x: x[0], valid=0.1, test=0.05, seed=1)
    assert sorted(train + valid + test) == sorted(items)
    keys = [{k for k, _ in part} for part in (train, valid, test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert (len(keys[0]), len(keys[1]), len(keys[2])) == (170, 20, 10)
    assert all(len([x for x in test if x[0] == k]) == 3 for k in keys[2])


def test_split_is_deterministic_for_a_seed_and_changes_with_it() -> None:
    items = list(range(1000))
    a = split_by_key(items, lambda x: x, valid=0.05, test=0.05, seed=0)
    b = split_by_key(items, lambda x: x, valid=0.05, test=0.05, seed=0)
    c = split_by_key(items, lambda x: x, valid=0.05, test=0.05, seed=1)
    assert a == b
    assert a[2] != c[2]


def test_small_inputs_still_get_every_split_and_tiny_ones_raise() -> None:
    train, valid, test = split_by_key([1, 2, 3], lambda x: x, valid=0.05, test=0.05, seed=0)
    assert len(train) == len(valid) == len(test) == 1
    with pytest.raises(DataError, match="at least 3"):
        split_by_key([1, 1, 2], lambda x: x, valid=0.1, test=0.1, seed=0)


def test_split_fractions_reads_and_checks_options() -> None:
    assert split_fractions({}) == (0.05, 0.05)
    assert split_fractions({"valid": "0.1", "test": "0.2"}) == (0.1, 0.2)
    with pytest.raises(DataError, match="valid='x'"):
        split_fractions({"valid": "x"})
    with pytest.raises(DataError, match=r"test='0.9'"):
        split_fractions({"test": "0.9"})


def test_drop_leaked_removes_sources_seen_earlier() -> None:
    train = [("a", "A"), ("b", "B")]
    valid = [("a", "A2"), ("c", "C")]
    test = [("c", "C"), ("d", "D"), ("b", "B")]
    assert drop_leaked(train, valid, test) == [[("c", "C")], [("d", "D")]]


def test_splits_rejects_an_empty_split() -> None:
    with pytest.raises(DataError, match="valid split is empty"):
        Splits(train=[("a", "b")], valid=[], test=[("c", "d")], name="x", description="y")
