"""The visibility every kernel asks: key spans of query blocks and tile masks, against the
contract's loops in tests/oracle.py."""

from __future__ import annotations

import pytest
import torch

from attnkit import KeyLengths
from attnkit.functional import build_plan
from tests.oracle import allowed_matrix


@pytest.mark.parametrize(
    ("lq", "lk", "kwargs"),
    [
        (7, 19, {"causal": True}),
        (19, 7, {"causal": True}),
        (23, 23, {"window": (4, 2)}),
        (9, 30, {"window": (3, 0), "causal": True}),
        (30, 30, {"window": (0, 5), "mask": KeyLengths(torch.tensor([30, 11]))}),
        (30, 30, {"causal": True,
                  "mask": KeyLengths(torch.tensor([30, 26]), starts=torch.tensor([7, 0]))}),
        (5, 30, {"mask": KeyLengths(torch.tensor([30, 30]), starts=torch.tensor([0, 29]))}),
    ],
)
def test_block_masks_and_spans_follow_the_contract(lq: int, lk: int, kwargs: dict) -> None:
    q, k = torch.randn(2, 1, lq, 4), torch.randn(2, 1, lk, 4)
    vis = build_plan(q, k, k, **kwargs).visibility
    window = kwargs.get("window")
    lengths = kwargs["mask"].lengths.tolist() if "mask" in kwargs else [lk, lk]
    starts = kwargs["mask"].starts if "mask" in kwargs else None
    starts = [0, 0] if starts is None else starts.tolist()
    for b in range(2):
        expected = torch.from_numpy(
            allowed_matrix(lq, lk, causal=kwargs.get("causal", False), window=window,
                           key_length=lengths[b], key_start=starts[b])
        )
        for q0, q1 in ((0, lq), (2, min(lq, 5)), (lq - 1, lq)):
            lo, hi = vis.span(q0, q1)
            seen = expected[q0:q1].any(dim=0).nonzero().flatten().tolist()
            assert all(lo <= j < hi for j in seen), (q0, q1, lo, hi)
            for k0, k1 in ((0, lk), (1, min(lk, 6)), (lk - 3, lk)):
                mask = vis.mask_of(q0, q1, k0, k1)
                got = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool) if mask is None else (
                    mask.expand(2, 1, q1 - q0, k1 - k0)[b, 0]
                )
                assert torch.equal(got, expected[q0:q1, k0:k1]), (b, q0, q1, k0, k1)


@pytest.mark.parametrize(
    ("lq", "lk", "causal", "window"),
    [
        (1, 512, True, None),  # one decoding step: the query sits at the last key
        (2, 512, True, None),
        (7, 7, True, None),
        (19, 7, True, None),
        (1, 40, False, (39, 0)),
        (1, 40, False, (38, 0)),
        (5, 9, False, (100, 100)),
        (5, 9, False, (3, 8)),
        (5, 9, False, (8, 3)),
    ],
)
def test_the_band_hides_keys_exactly_when_the_contract_hides_some(
    lq: int, lk: int, causal: bool, window: tuple[int, int] | None
) -> None:
    q, k = torch.randn(1, 1, lq, 4), torch.randn(1, 1, lk, 4)
    vis = build_plan(q, k, k, causal=causal, window=window).visibility
    allowed = allowed_matrix(lq, lk, causal=causal, window=window, key_length=lk)
    assert vis.band_hides == (not allowed.all())
    assert vis.has_mask == vis.band_hides  # nothing else hides a key here


@pytest.mark.parametrize(
    ("lq", "lk", "causal", "window"),
    [
        (7, 19, True, None),
        (19, 7, True, None),  # queries before the first key: empty rows
        (9, 30, True, (3, 0)),
        (9, 30, False, (0, 0)),
        (30, 9, False, (2, 2)),
    ],
)
def test_every_query_sees_a_key_exactly_when_the_oracle_says_so(
    lq: int, lk: int, causal: bool, window: tuple[int, int] | None
) -> None:
    q, k = torch.randn(2, 1, lq, 4), torch.randn(2, 1, lk, 4)
    vis = build_plan(q, k, k, causal=causal, window=window).visibility
    allowed = allowed_matrix(lq, lk, causal=causal, window=window, key_length=lk)
    assert vis.every_query_sees_a_key == bool(allowed.any(axis=1).all())


@pytest.mark.parametrize(
    "mask", [KeyLengths(torch.tensor([8, 8])), torch.rand(8, 8) > 0.5, torch.zeros(8, 8)]
)
def test_a_mask_makes_no_promise_that_every_query_sees_a_key(mask) -> None:
    """Lengths, masks and biases could empty a row; the claim reads no values, so it is off."""
    q = torch.randn(2, 1, 8, 4)
    assert not build_plan(q, q, q, mask=mask).visibility.every_query_sees_a_key
