"""The helpers the block kernels share: block masks, the in-place softmax, regenerable dropout."""

from __future__ import annotations

import pytest
import torch

from attnkit import KeyLengths
from attnkit.functional import build_plan
from attnkit.kernels._blocks import BlockDropout, Blocks, softmax_
from tests.oracle import allowed_matrix


@pytest.mark.parametrize(
    ("lq", "lk", "kwargs"),
    [
        (7, 19, {"causal": True}),
        (19, 7, {"causal": True}),
        (23, 23, {"window": (4, 2)}),
        (9, 30, {"window": (3, 0), "causal": True}),
        (30, 30, {"window": (0, 5), "mask": KeyLengths(torch.tensor([30, 11]))}),
    ],
)
def test_block_masks_and_spans_follow_the_contract(lq: int, lk: int, kwargs: dict) -> None:
    q, k = torch.randn(2, 1, lq, 4), torch.randn(2, 1, lk, 4)
    blocks = Blocks(build_plan(q, k, k, **kwargs))
    window = kwargs.get("window")
    lengths = kwargs["mask"].lengths.tolist() if "mask" in kwargs else [lk, lk]
    for b in range(2):
        expected = torch.from_numpy(
            allowed_matrix(lq, lk, causal=kwargs.get("causal", False), window=window,
                           key_length=lengths[b])
        )
        for q0, q1 in ((0, lq), (2, min(lq, 5)), (lq - 1, lq)):
            lo, hi = blocks.span(q0, q1)
            seen = expected[q0:q1].any(dim=0).nonzero().flatten().tolist()
            assert all(lo <= j < hi for j in seen), (q0, q1, lo, hi)
            for k0, k1 in ((0, lk), (1, min(lk, 6)), (lk - 3, lk)):
                mask = blocks.mask(q0, q1, k0, k1)
                got = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool) if mask is None else (
                    mask.expand(2, 1, q1 - q0, k1 - k0)[b, 0]
                )
                assert torch.equal(got, expected[q0:q1, k0:k1]), (b, q0, q1, k0, k1)


@pytest.mark.parametrize("contiguous", [True, False])
def test_softmax_in_place_with_its_log_sum_exp(contiguous: bool) -> None:
    base = torch.randn(3, 10, 7, dtype=torch.float64) * 4
    base[0, 2] = float("-inf")  # a row with nothing to attend to
    base[1, 3, :5] = float("-inf")
    s = base.clone() if contiguous else base.clone()[:, 1:8]
    original = s.clone()
    lse = softmax_(s)
    finite_rows = torch.isfinite(original).any(dim=-1)
    expected = torch.softmax(original, dim=-1).nan_to_num(0.0)
    torch.testing.assert_close(s, expected)
    expected_lse = torch.logsumexp(original, dim=-1, keepdim=True)
    torch.testing.assert_close(lse[finite_rows], expected_lse[finite_rows])
    assert torch.all(lse[~finite_rows] == float("-inf"))
    again = original.clone()
    assert softmax_(again, lse=False) is None
    torch.testing.assert_close(again, expected)


def test_dropout_masks_regenerate_from_seed_and_block() -> None:
    torch.manual_seed(3)
    drop = BlockDropout(0.25, torch.device("cpu"))
    first = drop.keep((0, 16, 32), (4, 50, 60), torch.float32)
    assert torch.equal(first, drop.keep((0, 16, 32), (4, 50, 60), torch.float32))
    other = drop.keep((0, 16, 64), (4, 50, 60), torch.float32)
    assert not torch.equal(first, other)
    torch.testing.assert_close(first.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert abs((first == 0).float().mean().item() - 0.25) < 0.02
    torch.manual_seed(3)
    assert torch.equal(BlockDropout(0.25, torch.device("cpu")).keep((0, 16, 32), (4, 50, 60),
                                                                    torch.float32), first)
