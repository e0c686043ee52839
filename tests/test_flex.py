"""FlexAttention's ``mask_mod``/``score_mod`` on attnkit, against PyTorch's own FlexAttention
(compiled, CPU, forward) and against the ``reference`` kernel (forward, backward, gradcheck).

PyTorch's FlexAttention is compiled once for the module (sizes fixed, so each mask or score
function costs one recompilation of a few seconds); its CPU backward does not exist, which is
what attnkit adds, so gradients are checked against ``reference`` and by finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch.nn.attention import flex_attention as torch_flex

import attnkit
from attnkit import and_masks, create_block_mask, or_masks
from attnkit.functional import build_plan
from attnkit.kernels.block_mask import index_grid
from attnkit.kernels.tiling import Tiling
from tests.kernels._checks import assert_matches_reference

B, H, L, D = 1, 4, 256, 16
DOCS = torch.repeat_interleave(torch.arange(4), torch.tensor([37, 100, 19, 100]))  # (L,)


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def sliding(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & (q_idx - kv_idx <= 40)


def prefix(b, h, q_idx, kv_idx):
    return kv_idx < 50


def document(b, h, q_idx, kv_idx):
    return DOCS[q_idx] == DOCS[kv_idx]


SLOPES = torch.tensor([2.0 ** (-8 * (i + 1) / H) for i in range(H)])  # ALiBi, Press et al.


def alibi(score, b, h, q_idx, kv_idx):
    return score - SLOPES[h] * (q_idx - kv_idx)


def softcap(score, b, h, q_idx, kv_idx):
    return 20.0 * torch.tanh(score / 20.0)


TABLE = torch.randn(H, 2 * L - 1, generator=torch.Generator().manual_seed(5))


def relative(score, b, h, q_idx, kv_idx):
    return score + TABLE[h, q_idx - kv_idx + L - 1]


CASES: dict[str, tuple[Callable, Callable | None]] = {
    "causal": (causal, None),
    "sliding-window": (sliding, None),
    "prefix-lm": (or_masks(prefix, causal), None),
    "document": (and_masks(document, causal), None),
    "alibi": (causal, alibi),
    "softcap": (causal, softcap),
    "relative-bias": (document, relative),
}


@pytest.fixture(scope="module")
def flex() -> Callable:
    """PyTorch's FlexAttention, compiled once for this module (CPU, fixed sizes)."""
    return torch.compile(torch_flex.flex_attention, dynamic=False)


def _qkv(hkv: int = H, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, D, generator=gen)
    return q, torch.randn(B, hkv, L, D, generator=gen), torch.randn(B, hkv, L, D, generator=gen)


@pytest.mark.parametrize("case", list(CASES))
def test_forward_equals_compiled_flex_attention(flex, case: str) -> None:
    mask_mod, score_mod = CASES[case]
    q, k, v = _qkv()
    theirs = flex(q, k, v, score_mod=score_mod,
                  block_mask=torch_flex.create_block_mask(mask_mod, None, None, L, L, "cpu"))
    ours = attnkit.attention(q, k, v, mask=create_block_mask(mask_mod, None, None, L, L),
                             score_mod=score_mod)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=2e-5)
    again = attnkit.attention(q, k, v, mask_mod=mask_mod, score_mod=score_mod, backend="chunked")
    torch.testing.assert_close(again, theirs, atol=2e-5, rtol=2e-5)


def test_grouped_query_heads_equal_flex_and_torch_block_masks_are_accepted(flex) -> None:
    q, k, v = _qkv(hkv=2, seed=1)
    block_mask = torch_flex.create_block_mask(and_masks(document, causal), B, H, L, L, "cpu")
    theirs = flex(q, k, v, score_mod=softcap, block_mask=block_mask, enable_gqa=True)
    for backend in ("auto", "chunked", "reference"):
        ours = attnkit.attention(q, k, v, mask=block_mask, score_mod=softcap, backend=backend)
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=2e-5)


def test_combinators_equal_pytorchs() -> None:
    b, h = torch.arange(2).view(2, 1, 1, 1), torch.arange(3).view(1, 3, 1, 1)
    i, j = torch.arange(L).view(1, 1, L, 1), torch.arange(L).view(1, 1, 1, L)
    for ours, theirs in ((and_masks, torch_flex.and_masks), (or_masks, torch_flex.or_masks)):
        got = ours(document, prefix, sliding)(b, h, i, j)
        want = theirs(document, prefix, sliding)(b, h, i, j)
        assert torch.equal(got.expand(2, 3, L, L), want.expand(2, 3, L, L))
    with pytest.raises(TypeError, match="and_masks: every argument must be a mask_mod"):
        and_masks(causal, 3)


def test_block_table_equals_pytorchs() -> None:
    """Empty, partial and full blocks of attnkit's table against torch's BlockMask lists."""
    mask_mod = and_masks(document, causal)
    ours = create_block_mask(mask_mod, None, None, L, L, BLOCK_SIZE=32)
    theirs = torch_flex.create_block_mask(mask_mod, None, None, L, L, "cpu", BLOCK_SIZE=32)
    converted = attnkit.flex.from_torch(theirs)
    assert torch.equal(ours.table, converted.table)
    assert set(ours.table.unique().tolist()) == {0, 1, 2}  # all three kinds occur


def _tiles_against_dense(mask_mod: Callable, lq: int, lk: int, qb: int, kb: int) -> None:
    q, k = torch.zeros(B, H, lq, D), torch.zeros(B, H, lk, D)
    plan = build_plan(q, k, k, mask=create_block_mask(mask_mod, None, None, lq, lk, BLOCK_SIZE=16))
    grid = index_grid(1, 1, torch.arange(lq).unsqueeze(-1), torch.arange(lk))
    dense = mask_mod(*grid).expand(1, 1, lq, lk)[0, 0]  # (Lq, Lk)
    covered = torch.zeros(lq, lk, dtype=torch.bool)
    for q0, q1, row in Tiling(plan.visibility, H, qb, kb, torch.float32).tiles():
        for k0, k1, tile in row:
            part = dense[q0:q1, k0:k1]
            assert part.any(), "an empty tile was computed"
            if part.all():
                assert tile.full, "a fully visible tile carries a mask"
            else:
                assert torch.equal(tile.mask.expand(1, 1, *part.shape)[0, 0], part)
            covered[q0:q1, k0:k1] = True
    assert not (dense & ~covered).any(), "a visible pair was skipped"


@pytest.mark.parametrize(("qb", "kb"), [(16, 16), (32, 48), (64, 16)])  # whole 16-blocks
def test_empty_tiles_are_skipped_and_full_tiles_carry_no_mask(qb: int, kb: int) -> None:
    _tiles_against_dense(and_masks(document, causal), L, L, qb, kb)
    _tiles_against_dense(sliding, L, L, qb, kb)


def _small(hq: int = 4, hkv: int = 2, lq: int = 23, lk: int = 29, seed: int = 2):
    gen = torch.Generator().manual_seed(seed)

    def make(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    return make(2, hq, lq, 8), make(2, hkv, lk, 8), make(2, hkv, lk, 8)


SMALL_DOCS = torch.tensor([0] * 9 + [1] * 11 + [2] * 9)  # packed keys of 3 documents


def small_document(b, h, q_idx, kv_idx):
    return (SMALL_DOCS[q_idx] == SMALL_DOCS[kv_idx]) & (q_idx + 6 >= kv_idx)


@pytest.mark.parametrize("score_mod", [None, alibi, softcap], ids=["none", "alibi", "softcap"])
@pytest.mark.parametrize("backend", ["chunked", "sdpa"])
def test_outputs_and_gradients_equal_reference(score_mod, backend: str) -> None:
    if backend == "sdpa" and score_mod is not None:
        return  # sdpa takes masks only (its refusal is tested below)
    q, k, v = _small()
    assert_matches_reference(backend, q, k, v, mask_mod=small_document, score_mod=score_mod)


def test_additive_scores_take_mask_mod_and_score_mod() -> None:
    from tests.kernels.test_additive import additive_score

    q, k, v = _small()
    assert_matches_reference("additive", q, k, v, score=additive_score(8, 8),
                             mask_mod=small_document, score_mod=softcap)


def test_gradcheck_through_score_mod_and_the_tensor_it_reads() -> None:
    """Finite differences of the chunked kernel, including the learned bias table that the
    score_mod reads (FlexAttention has no backward pass on CPU)."""
    q, k, v = _small(hq=2, hkv=1, lq=9, lk=11)
    q, k, v = (t[:1].detach().requires_grad_() for t in (q, k, v))  # batch 1, grouped heads
    table = torch.randn(2, 40, dtype=torch.float64, requires_grad=True)

    def learned(score, b, h, q_idx, kv_idx):
        return score + table[h, q_idx - kv_idx + 20]

    def attend(q, k, v, table_):
        return attnkit.attention(q, k, v, mask_mod=small_document, score_mod=learned,
                                 backend="chunked")

    assert torch.autograd.gradcheck(attend, (q, k, v, table), eps=1e-6, atol=1e-6)
    out = attend(q, k, v, table)
    want = attnkit.attention(q, k, v, mask_mod=small_document, score_mod=learned,
                             backend="reference")
    grads = torch.autograd.grad(out.sum(), table)
    want_grads = torch.autograd.grad(want.sum(), table)
    torch.testing.assert_close(grads[0], want_grads[0])


def test_a_query_with_every_key_hidden_gives_zero_and_no_nan() -> None:
    q, k, v = _small()

    def hide_query_3(b, h, q_idx, kv_idx):
        return (q_idx != 3) & (kv_idx <= q_idx + 6)

    for backend in ("chunked", "sdpa", "reference"):
        out = attnkit.attention(q, k, v, mask_mod=hide_query_3, backend=backend)
        grads = torch.autograd.grad(out.sum(), (q, k, v))
        assert torch.all(out[:, :, 3] == 0) and not out.isnan().any(), backend
        assert all(torch.isfinite(g).all() for g in grads) and torch.all(grads[0][:, :, 3] == 0)


def test_sparse_block_masks_go_to_the_block_kernel() -> None:
    q, k, v = (t.detach() for t in _qkv())
    block_mask = create_block_mask(and_masks(document, causal), 1, 1, L, L, BLOCK_SIZE=32)
    assert block_mask.density < 0.5
    dispatch = attnkit.explain_dispatch(q, k, v, mask=block_mask)
    assert dispatch.kernel == "chunked", str(dispatch)
    assert "the block kernels skip" in dispatch.passed_over["sdpa"]
    assert "score_mod not supported" in attnkit.explain_dispatch(
        q, k, v, score_mod=softcap).passed_over["sdpa"]


def test_bad_callables_are_named_at_plan_time() -> None:
    q, k, v = (t.detach() for t in _qkv())

    def three(b, h, q_idx):
        return q_idx >= 0

    def floats(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).float()

    def wrong_shape(b, h, q_idx, kv_idx):
        return torch.ones(5, dtype=torch.bool)

    def four(score, b, h, q_idx):
        return score

    def boolean(score, b, h, q_idx, kv_idx):
        return score > 0

    def broken(score, b, h, q_idx, kv_idx):
        return score + TABLE[h, q_idx + 10**6]  # out of bounds

    cases = [
        (TypeError, r"mask_mod must take 4 positional arguments .* taking 3", {"mask_mod": three}),
        (TypeError, r"mask_mod must return a bool tensor .* got torch.float32",
         {"mask_mod": floats}),
        (ValueError, r"mask_mod must return one value per index .* got shape \(5,\)",
         {"mask_mod": wrong_shape}),
        (TypeError, r"mask_mod must be a callable", {"mask_mod": "causal"}),
        (TypeError, r"score_mod must take 5 positional arguments .* taking 4",
         {"score_mod": four}),
        (TypeError, r"score_mod must return a floating-point tensor, got torch.bool",
         {"score_mod": boolean}),
        (ValueError, r"score_mod failed on index tensors", {"score_mod": broken}),
    ]
    for kind, pattern, kwargs in cases:
        with pytest.raises(kind, match=pattern):
            attnkit.explain_dispatch(q, k, v, **kwargs)  # planning only: no tile is computed
    wrong = create_block_mask(causal, None, None, L, L // 2)
    with pytest.raises(ValueError, match=r"block mask was made for .* 128\) but the call"):
        attnkit.attention(q, k, v, mask=wrong)
    with pytest.raises(ValueError, match="create_block_mask: Q_LEN must be a positive integer"):
        create_block_mask(causal, None, None, 0, L)


def test_a_block_mask_is_reused_across_calls_and_layers() -> None:
    """Made once, the table is not rebuilt by later calls (the mask_mod runs only on the
    partial tiles of each call), and every call agrees with the reference."""
    calls = {"n": 0}

    def counted(b, h, q_idx, kv_idx):
        calls["n"] += 1
        return document(b, h, q_idx, kv_idx) & causal(b, h, q_idx, kv_idx)

    block_mask = create_block_mask(counted, None, None, L, L)
    built = calls["n"]
    q, k, v = (t.detach() for t in _qkv())
    first = attnkit.attention(q, k, v, mask=block_mask, backend="chunked")
    per_call = calls["n"] - built
    attnkit.attention(q * 2, k, v, mask=block_mask, backend="chunked")
    assert calls["n"] - built == 2 * per_call  # the same work again, no new table
    want = attnkit.attention(q, k, v, mask_mod=counted, backend="reference")
    torch.testing.assert_close(first, want)
    assert math.isfinite(float(first.sum()))


def test_a_mask_that_is_exactly_a_band_runs_as_one() -> None:
    """Sliding windows and causal masks written as mask_mods are recognised (every visible
    pair counted against the band's): they then run on the band kernels, and agree with the
    reference evaluating the mask_mod itself."""

    def holed(b, h, q_idx, kv_idx):
        return sliding(b, h, q_idx, kv_idx) & (kv_idx != 7)

    def strict(b, h, q_idx, kv_idx):
        return (q_idx > kv_idx) & (q_idx - kv_idx <= 40)

    assert create_block_mask(sliding, None, None, L, L).band == (40, 0)
    assert create_block_mask(causal, None, None, L, L).band == (None, 0)
    assert create_block_mask(strict, None, None, L, L).band == (40, -1)
    assert create_block_mask(holed, None, None, L, L).band is None
    assert create_block_mask(document, None, None, L, L).band is None
    q, k, v = (t.detach().double() for t in _qkv())
    kernels = {"sliding": "local", "causal": "sdpa", "strict": "local"}
    for name, mask_mod in (("sliding", sliding), ("causal", causal), ("strict", strict)):
        block_mask = create_block_mask(mask_mod, None, None, L, L)
        assert attnkit.explain_dispatch(q, k, v, mask=block_mask).kernel == kernels[name]
        dense = mask_mod(*index_grid(1, 1, torch.arange(L).unsqueeze(-1), torch.arange(L)))
        want = attnkit.attention(q, k, v, mask=dense, backend="reference")  # the mask itself
        torch.testing.assert_close(attnkit.attention(q, k, v, mask=block_mask), want)


@pytest.mark.parametrize("per_entry", [False, True])  # tiles of every entry of B·Hkv, or one
@pytest.mark.parametrize("rows", [64, 0])  # one pass, a few rows per tile; a second pass
@pytest.mark.parametrize("summary", ["heads_mean", "key_totals", attnkit.TopK(3)])
def test_weight_summaries_see_the_same_masks(monkeypatch, summary, rows: int,
                                             per_entry: bool) -> None:
    """A summary of the weights, made in the kernel, equals the summary of the reference's
    full weights for index-based masks, score_mod and top-left alignment."""
    monkeypatch.setattr(attnkit.kernels.tiling, "WHOLE_ROWS_ELEMENTS", rows * 29)
    monkeypatch.setattr(attnkit.kernels.tiling, "PER_ENTRY_ELEMENTS", 0 if per_entry else 1 << 40)
    q, k, v = (t.detach() for t in _small(lq=29, lk=29))
    def per_item_and_head(score, b, h, q_idx, kv_idx):  # b and h must reach each tile's rows
        return score * (1.0 + 0.25 * h + 0.5 * b)

    for kwargs in ({"mask_mod": small_document, "score_mod": softcap},
                   {"score_mod": per_item_and_head},
                   {"causal": "top_left"}, {"mask": create_block_mask(small_document, 2, 4, 29, 29)}):
        _, weights = attnkit.attention(q, k, v, return_weights=True, backend="reference", **kwargs)
        _, got = attnkit.attention(q, k, v, return_weights=summary, **kwargs)
        if isinstance(summary, attnkit.TopK):
            torch.testing.assert_close(got[0], weights.topk(3, dim=-1).values)
            torch.testing.assert_close(weights.gather(-1, got[1]), got[0])
            continue
        want = weights.mean(dim=1) if summary == "heads_mean" else weights.sum(dim=2)
        torch.testing.assert_close(got, want)
