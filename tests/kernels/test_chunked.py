"""The ``chunked`` kernel against ``reference``: forward, backward, weights, scores, bf16."""

from __future__ import annotations

import pytest
import torch

import attnkit
from attnkit import Score
from attnkit.functional import build_plan
from attnkit.kernels.chunked import chunked
from tests.kernels._checks import (
    OPTIONS,
    assert_lowp_within_rule,
    assert_matches_reference,
    grid,
    make_inputs,
    option_kwargs,
)


@pytest.mark.parametrize(("shape", "option"), grid(OPTIONS, ("plain", "causal", "key-lengths")))
def test_output_and_gradients_match_reference(shape: str, option: str) -> None:
    q, k, v = make_inputs(shape)
    assert_matches_reference("chunked", q, k, v, **option_kwargs(option, q, k))


@pytest.mark.parametrize(("shape", "option"), grid(OPTIONS, ("causal-window", "bool-mask")))
def test_exact_weights_and_their_gradients_match_reference(shape: str, option: str) -> None:
    q, k, v = make_inputs(shape)
    kwargs = option_kwargs(option, q, k)
    assert attnkit.explain_dispatch(q, k, v, return_weights=True, **kwargs).kernel == "chunked"
    assert_matches_reference("chunked", q, k, v, return_weights=True, **kwargs)


@pytest.mark.parametrize(
    "make_score",
    [
        lambda d: Score("general", weight=torch.randn(d, d, dtype=torch.float64).requires_grad_()),
        lambda d: Score(
            "general", weight=torch.randn(4, d, d, dtype=torch.float64).requires_grad_()
        ),
        lambda d: "cosine",
        lambda d: "dot",
    ],
    ids=["general", "general-per-head", "cosine", "dot"],
)
@pytest.mark.parametrize("weights", [False, True])
def test_every_dot_product_score_with_its_parameter_gradients(make_score, weights: bool) -> None:
    q, k, v = make_inputs("gqa-7x97-d59")
    score = make_score(q.shape[-1])
    assert_matches_reference(
        "chunked", q, k, v, score=score, causal=True, return_weights=weights, scale=0.3
    )


def test_lse_is_the_log_sum_exp_of_the_visible_scores() -> None:
    q, k, v = make_inputs("long-1025-d8")
    plan = build_plan(q, k, v, causal=True, window=(600, 0))
    _, lse, _ = chunked(q, k, v, plan)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # written out: (B, H, Lq, Lk)
    i = torch.arange(1025).unsqueeze(1)
    j = torch.arange(1025)
    visible = (j <= i) & (j >= i - 600)
    expected = torch.logsumexp(scores.masked_fill(~visible, float("-inf")), dim=-1)
    torch.testing.assert_close(lse, expected.float())


def test_queries_with_nothing_to_see_give_zeros_and_zero_gradients() -> None:
    q, k, v = make_inputs((1, 2, 2, 9, 4, 8))  # causal with Lq > Lk: 5 queries see nothing
    out, weights = attnkit.attention(q, k, v, causal=True, return_weights=True, backend="chunked")
    (out.sum() + weights.sum()).backward()
    assert torch.all(out[:, :, :5] == 0) and torch.all(weights[:, :, :5] == 0)
    assert torch.all(q.grad[:, :, :5] == 0)
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    q.grad = None
    attnkit.attention(q, k, v, causal=True, backend="chunked").sum().backward()
    assert torch.all(q.grad[:, :, :5] == 0) and torch.isfinite(q.grad).all()


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((1, 2, 2, 97, 130, 64), {}),
        ((1, 4, 2, 600, 700, 64), {"causal": True}),
        ((1, 2, 1, 97, 97, 59), {"window": (8, 8)}),
    ],
)
@pytest.mark.parametrize("weights", [False, True])
def test_bfloat16_within_twice_pytorchs_own_error(shape, kwargs, weights: bool) -> None:
    assert_lowp_within_rule("chunked", shape, return_weights=weights, **kwargs)


def test_float16_runs_in_float32_blocks() -> None:
    q, k, v = (t.detach().half() for t in make_inputs("gqa-7x97-d59"))
    out, weights = attnkit.attention(q, k, v, backend="chunked", return_weights=True)
    ref = attnkit.attention(q.double(), k.double(), v.double(), backend="reference")
    assert out.dtype == weights.dtype == torch.float16
    torch.testing.assert_close(out.double(), ref, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("shape", [(97,), (7, 1), (2, 1, 1, 97), (4, 7, 97)])
@pytest.mark.parametrize("weights", [False, True])
def test_broadcast_float_masks_and_their_gradients(shape, weights: bool) -> None:
    q, k, v = make_inputs("gqa-7x97-d59")
    bias = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert_matches_reference("chunked", q, k, v, mask=bias, return_weights=weights, causal=True)


@pytest.mark.parametrize("transposed", ["q", "k", "v"])
def test_inputs_whose_rows_are_not_contiguous(transposed: str) -> None:
    # PyTorch's fused CPU kernel, which serves plain tiles, reads each row of q, k and v as
    # contiguous: a transposed view (last-dim stride != 1) must not reach it.
    q, k, v = make_inputs((1, 2, 2, 97, 130, 64))
    given = {
        name: t.detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()
        if name == transposed else t
        for name, t in (("q", q), ("k", k), ("v", v))
    }
    assert given[transposed].stride(-1) != 1
    assert_matches_reference("chunked", given["q"], given["k"], given["v"], causal=True)
    mask = attnkit.create_block_mask(lambda b, h, i, j: i // 40 == j // 40, None, None, 97, 130)
    assert_matches_reference("chunked", given["q"], given["k"], given["v"], mask=mask)


@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize(("shape", "option"), grid(OPTIONS, ("causal", "key-lengths")))
def test_attention_sinks_and_their_gradients_match_reference(
    shape: str, option: str, weights: bool
) -> None:
    # gpt-oss's sinks merged into each row's lse: forward, the weights the model sees (rows
    # summing to 1 − p_sink) and every gradient (the sinks' own included, through the weights
    # too) against the reference's dense softmax with the sink in its denominator
    q, k, v = make_inputs(shape)
    sinks = torch.randn(q.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    norm = attnkit.Normalizer("softmax_with_sinks", sinks=(sinks * 3).requires_grad_())
    assert_matches_reference("chunked", q, k, v, normalize=norm, return_weights=weights,
                             **option_kwargs(option, q, k))


@pytest.mark.parametrize("weights", [False, True])
def test_attention_sinks_per_query_and_on_every_path(weights: bool) -> None:
    # per-query sinks (B, Hq, Lq); a block mask (PyTorch's fused tiles), a transposed k and a
    # score_mod (the tensor-op tiles; with weights, a second pass with the final lse); rows
    # with no key at all
    q, k, v = make_inputs((2, 4, 2, 33, 40, 16))
    gen = torch.Generator().manual_seed(6)
    sinks = torch.randn(2, 4, 33, dtype=torch.float64, generator=gen).requires_grad_()
    norm = attnkit.Normalizer("softmax_with_sinks", sinks=sinks)
    blocks = attnkit.create_block_mask(lambda b, h, i, j: (i // 9 == j // 9) & (i < 30), None,
                                       None, 33, 40)
    kwargs = {"normalize": norm, "return_weights": weights}
    assert_matches_reference("chunked", q, k, v, mask=blocks, **kwargs)
    k_t = k.detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()
    assert_matches_reference("chunked", q, k_t, v, causal=True, **kwargs)
    assert_matches_reference("chunked", q, k, v,
                             score_mod=lambda s, b, h, i, j: s - 0.1 * (i - j).abs(), **kwargs)


@pytest.mark.parametrize("score_mod", [None, lambda s, b, h, i, j: s * 0.9], ids=["dot", "mod"])
def test_attention_sinks_weights_gradcheck(score_mod) -> None:
    # the weights' and output's gradients, the sinks' included (−D·p_sink with
    # D = rowsum(dO ∘ O) + rowsum(W ∘ dW)), against finite differences; causal with Lq > Lk
    # leaves the first queries no key (their weights 0, all their mass on the sink)
    q, k, v = make_inputs((1, 4, 2, 6, 4, 3))
    sinks = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def f(q, k, v, sinks):
        norm = attnkit.Normalizer("softmax_with_sinks", sinks=sinks)
        return attnkit.attention(q, k, v, normalize=norm, causal=True, return_weights=True,
                                 score_mod=score_mod, backend="chunked")

    assert torch.autograd.gradcheck(f, (q, k, v, sinks.requires_grad_()))


def test_attention_sinks_with_weights_and_summaries_run_in_chunked(monkeypatch) -> None:
    q, k, v = make_inputs("square-97-d8")
    norm = attnkit.Normalizer("softmax_with_sinks", sinks=torch.zeros(2, dtype=torch.float64))
    for asked in (False, True, "key_totals", "heads_mean", attnkit.TopK(3)):
        dispatch = attnkit.explain_dispatch(q, k, v, normalize=norm, return_weights=asked)
        assert dispatch.kernel == "chunked", (asked, dispatch)
    # under torch.compile the custom operator carries the sinks (and full weights), while
    # summaries go to the traceable reference kernel, with or without sinks
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    for asked in (False, True):
        assert attnkit.explain_dispatch(q, k, v, normalize=norm, return_weights=asked).kernel \
            == "chunked"
    dispatch = attnkit.explain_dispatch(q, k, v, normalize=norm, return_weights="key_totals")
    assert dispatch.kernel == "reference"
    assert "summaries of the weights" in dispatch.passed_over["chunked"]


def test_attention_sinks_weights_of_rows_with_no_key() -> None:
    # a row that sees no key gives its whole weight to the sink: output and weights 0, finite
    # gradients, and the sink's gradient 0 there (D = 0); also with a sink of −inf
    q, k, v = make_inputs((1, 2, 2, 9, 4, 8))  # causal with Lq > Lk: 5 queries see nothing
    for value in (0.5, float("-inf")):
        sinks = torch.full((2,), value, dtype=torch.float64, requires_grad=True)
        norm = attnkit.Normalizer("softmax_with_sinks", sinks=sinks)
        out, weights = attnkit.attention(q, k, v, normalize=norm, causal=True,
                                         return_weights=True, backend="chunked")
        assert torch.all(out[:, :, :5] == 0) and torch.all(weights[:, :, :5] == 0)
        assert torch.isfinite(weights).all()
        (out.sum() + weights.sum()).backward()
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
        assert torch.all(q.grad[:, :, :5] == 0)
        for t in (q, k, v):
            t.grad = None
