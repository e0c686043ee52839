"""Masks against the contract's definitions, written as loops in tests/oracle.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnkit import KeyLengths, masks
from attnkit.functional import build_plan
from tests.oracle import allowed_matrix


@pytest.mark.parametrize("lq,lk", [(1, 1), (3, 7), (7, 3), (5, 5)])
def test_causal_and_window(lq: int, lk: int) -> None:
    np.testing.assert_array_equal(masks.causal(lq, lk).numpy(), allowed_matrix(lq, lk, causal=True))
    np.testing.assert_array_equal(
        masks.window(lq, lk, 2, 1).numpy(), allowed_matrix(lq, lk, window=(2, 1))
    )


def test_window_with_explicit_positions_is_luong_local_m() -> None:
    m = masks.window(3, 8, 1, 1, positions=torch.arange(3)).numpy()
    assert m[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert m[2].tolist() == [0, 1, 1, 1, 0, 0, 0, 0]


def test_key_padding_and_combine() -> None:
    pad = masks.key_padding(torch.tensor([2, 4]), 4)
    assert pad.shape == (2, 1, 1, 4)
    both = masks.combine(pad, masks.causal(4, 4))
    np.testing.assert_array_equal(
        both[0, 0].numpy(), allowed_matrix(4, 4, causal=True, key_length=2)
    )
    assert masks.combine(None, None) is None


def _visibility(lq: int, lk: int, **kwargs):
    q, k = torch.zeros(2, 1, lq, 1), torch.zeros(2, 1, lk, 1)
    return build_plan(q, k, k, **kwargs).visibility


@pytest.mark.parametrize("causal,window", [(True, None), (False, (3, 2)), (True, (2, 5))])
def test_visibility_tiles_equal_the_dense_mask(causal, window) -> None:
    lengths = torch.tensor([9, 5])
    vis = _visibility(6, 9, causal=causal, window=window, mask=KeyLengths(lengths))
    dense = vis.mask_of(0, 6, 0, 9)
    for b in range(2):
        want = allowed_matrix(6, 9, causal=causal, window=window, key_length=int(lengths[b]))
        np.testing.assert_array_equal(dense[b, 0].numpy(), want)
    block = vis.mask_of(2, 5, 3, 8)
    torch.testing.assert_close(block, dense[:, :, 2:5, 3:8])


@pytest.mark.parametrize("window", [None, (4, 0), (2, 3)])
@pytest.mark.parametrize("causal", [False, True])
def test_every_tile_equals_the_oracle_and_a_covered_tile_needs_no_mask(causal, window) -> None:
    lq, lk = 5, 8
    vis = _visibility(lq, lk, causal=causal, window=window)
    want = allowed_matrix(lq, lk, causal=causal, window=window)
    for q0, q1, k0, k1 in [(4, 5, 0, 8), (0, 5, 0, 8), (2, 4, 3, 7), (0, 1, 0, 3), (3, 5, 6, 8)]:
        block = vis.mask_of(q0, q1, k0, k1)
        expected = want[q0:q1, k0:k1]
        if block is None:  # only allowed when the oracle hides nothing there
            assert expected.all(), (q0, q1, k0, k1)
        else:
            np.testing.assert_array_equal(block[0, 0].numpy(), expected)
        tile = vis.tile(q0, q1, k0, k1)
        if not expected.any():
            assert tile is None, (q0, q1, k0, k1)  # nothing visible: skipped
        elif expected.all():
            assert tile is not None and tile.full, (q0, q1, k0, k1)  # no mask needed
    decoding_step = vis.mask_of(lq - 1, lq, 0, lk)
    assert (decoding_step is None) == (window is None)  # the last query sees every key


def test_torch_polarity_and_bias() -> None:
    torch_mask = torch.tensor([[False, True]])
    assert masks.from_torch(torch_mask).tolist() == [[True, False]]
    assert masks.to_bias(torch.tensor([True, False])).tolist() == [0.0, float("-inf")]
    # |j - 2.4| <= 1 holds for j = 2 (0.4) and j = 3 (0.6) only
    assert masks.around(torch.tensor([2.4]), 6, 1.0).tolist() == [
        [False, False, True, True, False, False]
    ]
