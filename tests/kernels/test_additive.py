"""The ``additive`` kernel (Bahdanau/concat scores in blocks) against ``reference``."""

from __future__ import annotations

import pytest
import torch

import attnkit
from attnkit import Score
from tests.kernels._checks import (
    OPTIONS,
    assert_matches_reference,
    grid,
    make_inputs,
    option_kwargs,
)


def additive_score(dq: int, dk: int, width: int = 6, bias: bool = True) -> Score:
    gen = torch.Generator().manual_seed(5)

    def param(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=gen, dtype=torch.float64).requires_grad_()

    extra = {"bias": param(width)} if bias else {}
    return Score("additive", w_q=param(width, dq), w_k=param(width, dk), v=param(width), **extra)


@pytest.mark.parametrize(("shape", "option"), grid(OPTIONS, ("plain", "causal-window")))
def test_output_and_all_gradients_match_reference(shape: str, option: str) -> None:
    q, k, v = make_inputs(shape)
    score = additive_score(q.shape[-1], k.shape[-1])
    assert_matches_reference("additive", q, k, v, score=score, **option_kwargs(option, q, k))


@pytest.mark.parametrize(("shape", "option"), grid(("plain", "causal", "bool-mask", "bias"), ()))
def test_weights_from_the_lse_and_their_gradients(shape: str, option: str) -> None:
    q, k, v = make_inputs(shape)
    score = additive_score(q.shape[-1], k.shape[-1])
    kwargs = option_kwargs(option, q, k)
    assert_matches_reference("additive", q, k, v, score=score, return_weights=True, **kwargs)


def test_concat_score_and_different_query_key_dims() -> None:
    q, _, _ = make_inputs((2, 4, 2, 13, 1, 7))
    _, k, v = make_inputs((2, 4, 2, 1, 70, 5))
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(9, 12, generator=gen, dtype=torch.float64).requires_grad_()
    vec = torch.randn(9, generator=gen, dtype=torch.float64).requires_grad_()
    assert_matches_reference("additive", q, k, v, score=Score("concat", weight=weight, v=vec))
    score = additive_score(7, 5, bias=False)
    assert_matches_reference("additive", q, k, v, score=score, scale=0.5, causal=True)


def test_auto_runs_additive_for_additive_scores() -> None:
    q, k, v = make_inputs("gqa-7x97-d59")
    dispatch = attnkit.explain_dispatch(q, k, v, score=additive_score(59, 59))
    assert dispatch.kernel == "additive"
    assert "not a dot product" in dispatch.passed_over["chunked"]


def test_bfloat16_stays_within_twice_the_references_own_error() -> None:
    q, k, v = make_inputs((1, 2, 1, 97, 130, 16), dtype=torch.bfloat16, seed=3)
    score = additive_score(16, 16)
    out = attnkit.attention(q, k, v, score=score, backend="additive")
    ref_lowp = attnkit.attention(q, k, v, score=score, backend="reference")
    truth = attnkit.attention(q.double(), k.double(), v.double(), score=score, backend="reference")
    assert out.dtype == torch.bfloat16
    bound = 2 * (ref_lowp.double() - truth).abs().max().item() + 1e-6
    assert (out.double() - truth).abs().max().item() <= bound
