"""Tests for attnkit.data.batching: padding, <bos>/<eos> placement, bucketing, determinism."""

from __future__ import annotations

import pytest
import torch

from attnkit.data.batching import BucketBatcher, collate, encode_pairs, make_batches
from attnkit.data.tokenizer import Tokenizer

PAD, BOS, EOS = 0, 1, 2


def _examples(n: int = 300, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 40, (n, 2), generator=g).tolist()
    return [(list(range(4, 4 + s)), list(range(10, 10 + t))) for s, t in lengths]


def test_collate_pads_and_places_bos_eos_exactly() -> None:
    batch = collate([([5, 6, 7], [8]), ([9], [10, 11, 12])], indices=[4, 2])
    assert torch.equal(batch.src, torch.tensor([[5, 6, 7], [9, PAD, PAD]]))
    assert torch.equal(batch.src_lengths, torch.tensor([3, 1]))
    assert torch.equal(batch.tgt_in, torch.tensor([[BOS, 8, PAD, PAD], [BOS, 10, 11, 12]]))
    assert torch.equal(batch.tgt_out, torch.tensor([[8, EOS, PAD, PAD], [10, 11, 12, EOS]]))
    assert torch.equal(batch.tgt_lengths, torch.tensor([2, 4]))
    assert torch.equal(batch.index, torch.tensor([4, 2]))
    assert all(t.dtype == torch.int64 for t in (batch.src, batch.tgt_in, batch.tgt_out))
    assert batch.num_target_tokens == 6 and batch.size == 2


def test_batches_are_deterministic_for_a_seed_and_cover_everything_once() -> None:
    ex = _examples()
    a = make_batches(ex, batch_size=16, seed=7)
    b = make_batches(ex, batch_size=16, seed=7)
    assert [x.index.tolist() for x in a] == [x.index.tolist() for x in b]
    assert all(torch.equal(x.src, y.src) and torch.equal(x.tgt_in, y.tgt_in)
               for x, y in zip(a, b, strict=True))
    assert sorted(i for x in a for i in x.index.tolist()) == list(range(len(ex)))
    assert all(x.size <= 16 for x in a)
    other = make_batches(ex, batch_size=16, seed=8)
    assert [x.index.tolist() for x in a] != [x.index.tolist() for x in other]


def test_each_row_matches_its_example() -> None:
    ex = _examples(50)
    for batch in make_batches(ex, batch_size=8, seed=1):
        for row, i in enumerate(batch.index.tolist()):
            s, t = ex[i]
            assert batch.src[row, :len(s)].tolist() == s
            assert batch.src[row, len(s):].eq(PAD).all()
            assert batch.tgt_in[row, :len(t) + 1].tolist() == [BOS, *t]
            assert batch.tgt_out[row, :len(t) + 1].tolist() == [*t, EOS]
            assert batch.tgt_out[row, len(t) + 1:].eq(PAD).all()


def test_max_tokens_budget_and_bucketing_reduces_padding() -> None:
    ex = _examples(600)
    batches = make_batches(ex, max_tokens=400, seed=0)
    for b in batches:
        assert b.size * max(b.src.shape[1], b.tgt_in.shape[1]) <= 400 or b.size == 1
    # Translations have correlated lengths: target = source +- 2 tokens.
    g = torch.Generator().manual_seed(1)
    ex = [(s, list(range(10, 10 + max(1, len(s) + int(d)))))
          for (s, _), d in zip(ex, torch.randint(-2, 3, (len(ex),), generator=g), strict=True)]

    def padding(bs):
        pads = sum(int((b.src == PAD).sum() + (b.tgt_out == PAD).sum()) for b in bs)
        return pads / sum(b.src.numel() + b.tgt_out.numel() for b in bs)

    unbucketed = make_batches(ex, batch_size=16, seed=0, pool_batches=1)
    bucketed = make_batches(ex, batch_size=16, seed=0, pool_batches=50)
    assert padding(bucketed) < 0.5 * padding(unbucketed)


def test_no_shuffle_keeps_order() -> None:
    ex = _examples(20)
    batches = make_batches(ex, batch_size=6, shuffle=False)
    assert [b.index.tolist() for b in batches] == [
        list(range(0, 6)), list(range(6, 12)), list(range(12, 18)), [18, 19]]


def test_bucket_batcher_reshuffles_per_epoch_and_can_resume() -> None:
    batcher = BucketBatcher(_examples(), batch_size=32, seed=3)
    first = [b.index.tolist() for b in batcher]
    second = [b.index.tolist() for b in batcher]
    assert first != second and batcher.epoch == 2
    batcher.set_epoch(1)
    assert [b.index.tolist() for b in batcher] == second
    assert len(batcher) == len(first)


def test_encode_pairs_with_real_tokenizers() -> None:
    pairs = [("vierundzwanzig", "twenty-four"), ("zwei", "two")]
    src = Tokenizer.train([p[0] for p in pairs], kind="char")
    tgt = Tokenizer.train([p[1] for p in pairs], kind="word", vocab_size=50)
    ex = encode_pairs(pairs, src, tgt, max_src_len=6)
    assert ex[0][0] == src.encode("vierun") and ex[1][1] == tgt.encode("two")
    batch = collate(ex)
    assert tgt.decode(batch.tgt_out[0]) == "twenty-four"
    assert tgt.decode(batch.tgt_in[1]) == "two"


def test_bad_arguments() -> None:
    ex = _examples(5)
    with pytest.raises(ValueError, match="exactly one of batch_size or max_tokens"):
        make_batches(ex)
    with pytest.raises(ValueError, match="exactly one of batch_size or max_tokens"):
        make_batches(ex, batch_size=2, max_tokens=10)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        make_batches(ex, batch_size=0)
    with pytest.raises(ValueError, match="empty list"):
        make_batches([], batch_size=2)
    with pytest.raises(ValueError, match="example 1 has an empty target"):
        collate([([4], [5]), ([4], [])])
