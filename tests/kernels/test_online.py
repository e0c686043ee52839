"""The online softmax's pieces: the in-place softmax with its log-sum-exp, the merge of two
partial results, regenerable dropout."""

from __future__ import annotations

import pytest
import torch

from attnkit.kernels.online import merge_, softmax_
from attnkit.kernels.tiling import BlockDropout


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


def test_merging_two_key_halves_equals_attention_over_all_keys() -> None:
    gen = torch.Generator().manual_seed(4)
    s = torch.randn(2, 6, 9, generator=gen, dtype=torch.float64) * 3
    v = torch.randn(2, 9, 4, generator=gen, dtype=torch.float64)
    s[0, 1] = float("-inf")  # a row with nothing to attend to anywhere
    s[1, 2, :4] = float("-inf")  # a row empty in the first half only
    want = torch.softmax(s, dim=-1).nan_to_num(0.0) @ v
    want_lse = torch.logsumexp(s, dim=-1)
    parts = []
    for keys in (slice(0, 4), slice(4, 9)):
        p = s[..., keys].clone()
        lse = softmax_(p).squeeze(-1)  # (2, 6): this half's log-sum-exp
        parts.append((p @ v[:, keys], lse))
    out, lse = parts[0][0].clone(), parts[0][1].clone()
    merge_(out, lse, *parts[1])
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(lse, want_lse)
    assert torch.all(out[0, 1] == 0) and lse[0, 1] == float("-inf")
