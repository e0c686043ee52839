"""``attention(return_weights=...)`` summaries against the same reduction, written here, of the
``reference`` kernel's full weights; and the refusal of anything else."""

from __future__ import annotations

import pytest
import torch

import attnkit
from attnkit import KeyLengths, TopK
from attnkit.functional import build_plan
from attnkit.kernels import chunked, summaries, tiling

# name: (B, Hq, Hkv, Lq, Lk)
SHAPES = {
    "gqa-7x23": (2, 4, 2, 7, 23),
    "square-31": (2, 2, 2, 31, 31),
    "more-queries-9x4": (1, 2, 1, 9, 4),  # causal: the first 5 queries see no key
}
OPTIONS = ("plain", "causal", "window", "causal-window", "key-lengths", "bool-mask", "bias")


def _inputs(shape: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    b, hq, hkv, lq, lk = SHAPES[shape]
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, lq, 8, generator=gen, dtype=torch.float64)
    k = torch.randn(b, hkv, lk, 8, generator=gen, dtype=torch.float64)
    v = torch.randn(b, hkv, lk, 5, generator=gen, dtype=torch.float64)
    return q, k, v


def _options(option: str, q: torch.Tensor, k: torch.Tensor) -> dict:
    b, _, lq, _ = q.shape
    lk = k.shape[2]
    gen = torch.Generator().manual_seed(1)
    if option == "causal":
        return {"causal": True}
    if option == "window":
        return {"window": (2, 1)}
    if option == "causal-window":
        return {"causal": True, "window": (3, 0)}
    if option == "key-lengths":  # the last item keeps no key: empty rows
        return {"mask": KeyLengths(torch.tensor([lk - 2] + [0] * (b - 1)))}
    if option == "bool-mask":  # (B, 1, Lq, Lk) with the first query's row empty
        mask = torch.rand(b, 1, lq, lk, generator=gen) > 0.4
        mask[:, :, 0] = False
        return {"mask": mask}
    if option == "bias":
        return {"mask": torch.randn(lq, lk, generator=gen, dtype=torch.float64)}
    return {}


def _sinks(q: torch.Tensor) -> dict:
    """gpt-oss's attention sinks, one logit per query head, large enough to take a good share
    of each row (the weights then sum to 1 − p_sink)."""
    gen = torch.Generator().manual_seed(2)
    sinks = torch.randn(q.shape[1], generator=gen, dtype=q.dtype) + 1.5
    return {"normalize": attnkit.Normalizer("softmax_with_sinks", sinks=sinks)}


def _reference_weights(q, k, v, **options) -> torch.Tensor:
    return attnkit.attention(q, k, v, return_weights=True, backend="reference", **options)[1]


@pytest.fixture(params=["one-pass", "one-pass-per-entry", "one-pass-few-rows", "two-pass"])
def passes(request, monkeypatch) -> str:
    """Run every case in each of the chunked kernel's ways: tiles of whole rows reduced as they
    are made (all queries in one tile of every entry of B·Hkv, or of one entry, or a few rows
    of one entry per tile), and a second pass over tiles of 16 keys with the final
    log-sum-exp."""
    if request.param != "one-pass":
        monkeypatch.setattr(tiling, "PER_ENTRY_ELEMENTS", 0)
    if request.param == "one-pass-few-rows":
        monkeypatch.setattr(tiling, "WHOLE_ROWS_ELEMENTS", 200)
    if request.param == "two-pass":
        monkeypatch.setattr(tiling, "WHOLE_ROWS_ELEMENTS", 0)
        monkeypatch.setattr(chunked, "_KEY_BLOCK", 16)
        monkeypatch.setattr(chunked, "_BLOCK_ELEMENTS", 1)
    return request.param


@pytest.mark.parametrize("sinks", [False, True], ids=["softmax", "sinks"])
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_summaries_reduce_the_reference_weights(
    shape: str, option: str, passes: str, sinks: bool
) -> None:
    # with sinks, the reference's weights are the ones the model sees (rows summing to
    # 1 − p_sink; a row with no key all 0): the summaries reduce those
    q, k, v = _inputs(shape)
    options = _options(option, q, k) | (_sinks(q) if sinks else {})
    kernel = attnkit.explain_dispatch(q, k, v, return_weights="key_totals", **options).kernel
    assert kernel == "chunked"  # in the kernel, not from the full weights
    weights = _reference_weights(q, k, v, **options)  # (B, Hq, Lq, Lk)
    out_ref = attnkit.attention(q, k, v, backend="reference", **options)

    out, heads_mean = attnkit.attention(q, k, v, return_weights="heads_mean", **options)
    torch.testing.assert_close(heads_mean, weights.sum(dim=1) / weights.shape[1])
    torch.testing.assert_close(out, out_ref)

    _, totals = attnkit.attention(q, k, v, return_weights="key_totals", **options)
    expected = torch.zeros(weights.shape[0], weights.shape[1], weights.shape[3], dtype=q.dtype)
    for i in range(weights.shape[2]):
        expected += weights[:, :, i]
    torch.testing.assert_close(totals, expected)

    top = min(3, k.shape[2])
    _, (values, indices) = attnkit.attention(q, k, v, return_weights=TopK(top), **options)
    assert values.shape == indices.shape == (*weights.shape[:3], top)
    ranked = weights.sort(dim=-1, descending=True).values[..., :top]
    torch.testing.assert_close(values, ranked)
    # ties (zeros of hidden keys) may come in any order: the indices must point at the values
    torch.testing.assert_close(weights.gather(-1, indices), values)
    assert (indices.sort(dim=-1).values.diff(dim=-1) > 0).all()  # distinct keys


def test_statistics_carry_no_gradient_and_the_output_does() -> None:
    q, k, v = (t.requires_grad_() for t in _inputs("gqa-7x23"))
    out, totals = attnkit.attention(q, k, v, causal=True, return_weights="key_totals")
    assert not totals.requires_grad
    out.sum().backward()
    assert q.grad is not None and k.grad is not None


def test_empty_inputs_give_zero_summaries() -> None:
    q, k, v = torch.zeros(1, 2, 0, 4), torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4)
    _, totals = attnkit.attention(q, k, v, return_weights="key_totals")
    assert torch.equal(totals, torch.zeros(1, 2, 3))
    _, mean = attnkit.attention(q, k, v, return_weights="heads_mean")
    assert mean.shape == (1, 0, 3)


def test_tiles_of_one_entry_with_many_rows(monkeypatch) -> None:
    """A tile of one entry's whole rows (here 256 queries) has its product with the values cut
    into blocks of rows (online.product_): output and summaries still equal the reference."""
    monkeypatch.setattr(tiling, "PER_ENTRY_ELEMENTS", 0)
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(2, 2, 256, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, 1, 9, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    rows = tiling.whole_rows(chunked.tiling(build_plan(q, k, v, causal=True)))
    assert rows is not None and rows.per_entry and rows.qb == 256  # what this test is about
    weights = _reference_weights(q, k, v, causal=True)
    out, totals = attnkit.attention(q, k, v, return_weights="key_totals", causal=True)
    torch.testing.assert_close(out, attnkit.attention(q, k, v, causal=True, backend="reference"))
    torch.testing.assert_close(totals, weights.sum(dim=2))


@pytest.mark.parametrize("sinks", [False, True], ids=["softmax", "sinks"])
@pytest.mark.parametrize("rows", [40, 160])  # 10 queries per tile: only the last block sees keys
def test_blocks_of_queries_that_see_no_key_weigh_zero(monkeypatch, rows: int, sinks: bool) -> None:
    """Blocks of queries no tile visits (bottom-right causal, Lq > Lk) are left out of the
    tiles; their rows of the heads' mean must still be 0, as the reference's weights are."""
    monkeypatch.setattr(tiling, "WHOLE_ROWS_ELEMENTS", rows)
    monkeypatch.setattr(tiling, "PER_ENTRY_ELEMENTS", 0 if rows == 40 else 1 << 40)
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 2, 40, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 4, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    options = {"causal": True} | (_sinks(q) if sinks else {})
    weights = _reference_weights(q, k, v, **options)  # queries 0..35 see no key
    out, mean = attnkit.attention(q, k, v, return_weights="heads_mean", **options)
    torch.testing.assert_close(mean, weights.mean(dim=1))
    torch.testing.assert_close(out, attnkit.attention(q, k, v, backend="reference", **options))


@pytest.mark.parametrize(
    "bad, error",
    [("yes", ValueError), ("weights", ValueError), (1, TypeError), (None, TypeError),
     (torch.tensor(True), TypeError)],
)
def test_anything_else_is_refused_by_name(bad, error) -> None:
    q, k, v = _inputs("gqa-7x23")
    with pytest.raises(error, match="return_weights must be True, False, 'heads_mean'"):
        attnkit.attention(q, k, v, return_weights=bad)


def test_topk_checks_k() -> None:
    q, k, v = _inputs("more-queries-9x4")
    with pytest.raises(ValueError, match=r"TopK\(5\) needs k ≤ Lk, got Lk = 4"):
        attnkit.attention(q, k, v, return_weights=TopK(5))
    with pytest.raises(ValueError, match="positive integer"):
        TopK(0)
    with pytest.raises(TypeError, match="positive integer"):
        TopK(True)


@pytest.mark.parametrize("summary", ["heads_mean", "key_totals", TopK(4)])
def test_additive_scores_summarised_from_the_second_pass(summary) -> None:
    """The ``additive`` kernel reduces its second pass; float32, causal, grouped heads."""
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 4, 9, 6, generator=gen), torch.randn(2, 2, 11, 5, generator=gen)
    v = torch.randn(2, 2, 11, 3, generator=gen)
    score = attnkit.Score("additive", w_q=torch.randn(7, 6, generator=gen),
                          w_k=torch.randn(7, 5, generator=gen), v=torch.randn(7, generator=gen))
    options = {"score": score, "causal": True}
    assert attnkit.explain_dispatch(q, k, v, return_weights=summary, **options).kernel == "additive"
    weights = _reference_weights(q, k, v, **options)
    _, got = attnkit.attention(q, k, v, return_weights=summary, **options)
    if isinstance(summary, TopK):
        torch.testing.assert_close(got[0], weights.topk(4, dim=-1).values)
        torch.testing.assert_close(weights.gather(-1, got[1]), got[0])
    elif summary == "heads_mean":
        torch.testing.assert_close(got, weights.mean(dim=1))
    else:
        torch.testing.assert_close(got, weights.sum(dim=2))


def test_other_normalizers_reduce_the_reference_weights() -> None:
    """Sparsemax has no online form: the reference kernel serves it and reduces its weights."""
    q, k, v = _inputs("gqa-7x23")
    weights = _reference_weights(q, k, v, normalize="sparsemax")
    _, totals = attnkit.attention(q, k, v, return_weights="key_totals", normalize="sparsemax")
    torch.testing.assert_close(totals, weights.sum(dim=2))


def test_a_backend_without_summaries_says_so() -> None:
    q, k, v = _inputs("square-31")
    with pytest.raises(ValueError, match="sdpa: summaries of the weights not supported"):
        attnkit.attention(q, k, v, return_weights="key_totals", backend="sdpa")


@pytest.mark.parametrize("option", ["plain", "causal", "key-lengths"])
def test_topk_of_wide_rows_takes_candidates_from_groups(option: str) -> None:
    """Rows of 203 keys: TopK(5) takes its candidates from the groups of keys with the largest
    maxima (and the 3 keys left over); the values are still the reference's top 5."""
    assert 203 // summaries._GROUP >= 4 * 5  # wide enough for the groups
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(2, 2, 6, 8, generator=gen, dtype=torch.float64) * 3
    k = torch.randn(2, 1, 203, 8, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 1, 203, 4, generator=gen, dtype=torch.float64)
    options = _options(option, q, k)
    weights = _reference_weights(q, k, v, **options)
    _, (values, indices) = attnkit.attention(q, k, v, return_weights=TopK(5), **options)
    torch.testing.assert_close(values, weights.topk(5, dim=-1).values)
    torch.testing.assert_close(weights.gather(-1, indices), values)
    assert (indices.sort(dim=-1).values.diff(dim=-1) > 0).all()
