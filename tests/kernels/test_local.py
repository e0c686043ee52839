"""The ``local`` (banded) kernel against ``reference``: forward, backward, every mask kind."""

from __future__ import annotations

import importlib

import pytest
import torch

import attnkit
from attnkit import KeyLengths
from tests.kernels._checks import (
    OPTIONS,
    assert_lowp_within_rule,
    assert_matches_reference,
    grid,
    make_inputs,
    option_kwargs,
)


def banded(option: str, q: torch.Tensor, k: torch.Tensor) -> dict:
    """The grid option, with a window (5, 3) added where it has none."""
    kwargs = option_kwargs(option, q, k, bias_grad=False)
    kwargs.setdefault("window", (5, 3))
    return kwargs


@pytest.mark.parametrize(
    ("shape", "option"), grid(OPTIONS, ("causal-window", "key-lengths", "bool-mask"))
)
def test_output_and_gradients_match_reference(shape: str, option: str) -> None:
    q, k, v = make_inputs(shape)
    assert_matches_reference("local", q, k, v, **banded(option, q, k))


@pytest.mark.parametrize(
    ("window", "causal", "lq", "lk"),
    [
        ((128, 128), False, 1025, 1025),
        ((128, 128), False, 1024, 1024),  # whole blocks: queries and outputs used in place
        ((255, 0), True, 1025, 1025),
        ((0, 40), False, 1025, 1025),
        ((64, 64), True, 1, 1025),
        ((32, 32), False, 512, 2000),
    ],
)
def test_wide_windows_and_decoding_match_reference(window, causal: bool, lq: int, lk: int) -> None:
    q, k, v = make_inputs((1, 2, 1, lq, lk, 8))
    assert_matches_reference("local", q, k, v, window=window, causal=causal)


def test_auto_runs_local_for_narrow_windows_only() -> None:
    q, k, v = make_inputs((1, 2, 2, 1025, 1025, 8))
    assert attnkit.explain_dispatch(q, k, v, window=(16, 16)).kernel == "local"
    wide = attnkit.explain_dispatch(q, k, v, window=(600, 600))
    assert wide.kernel == "sdpa" and "dense kernels are faster" in wide.passed_over["local"]
    assert "no window" in attnkit.explain_dispatch(q, k, v, causal=True).passed_over["local"]


def test_queries_with_nothing_to_see_give_zeros_and_zero_gradients() -> None:
    q, k, v = make_inputs((1, 2, 2, 40, 10, 8))  # 30 queries sit before every key
    out = attnkit.attention(q, k, v, causal=True, window=(4, 0), backend="local")
    out.sum().backward()
    assert torch.all(out[:, :, :30] == 0) and torch.all(q.grad[:, :, :30] == 0)
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_cannot_return_weights_and_says_so() -> None:
    q, k, v = make_inputs("square-97-d8")
    with pytest.raises(ValueError, match="local: returning weights not supported"):
        attnkit.attention(q, k, v, window=(2, 2), return_weights=True, backend="local")
    bias = torch.randn(97, 97, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="gradient of a float"):
        attnkit.attention(q, k, v, window=(2, 2), mask=bias, backend="local")


@pytest.mark.parametrize("kwargs", [{"window": (16, 16)}, {"window": (32, 0), "causal": True}])
def test_bfloat16_within_twice_pytorchs_own_error(kwargs) -> None:
    assert_lowp_within_rule("local", (1, 4, 2, 300, 300, 64), **kwargs)


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((1, 2, 1, 1025, 1025, 8), {"window": (128, 128)}),
        ((2, 4, 2, 700, 1000, 8), {"window": (40, 20), "causal": True}),
        ((2, 2, 2, 1000, 1000, 8), {"window": (30, 30), "mask": KeyLengths(torch.tensor([1000, 517]))}),
    ],
)
def test_key_windows_read_in_place_with_padded_ends(monkeypatch, shape, kwargs) -> None:
    """Small groups, so that blocks read the keys themselves in the middle and padded copies
    at the ends (``local.Segment``), over several groups each."""
    monkeypatch.setattr(importlib.import_module("attnkit.kernels.band"), "_GROUP_ELEMENTS", 1)
    q, k, v = make_inputs(shape)
    assert_matches_reference("local", q, k, v, **kwargs)


# ---------------------------------------------------------------------------------------------
# Attention sinks (gpt-oss's softmax_with_sinks): merged into each row's lse after the window.


def _sinks(*shape: int, seed: int = 5) -> attnkit.Normalizer:
    """A ``softmax_with_sinks`` normalizer with random sinks (spread ×3) that need a gradient."""
    sinks = 3 * torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return attnkit.Normalizer("softmax_with_sinks", sinks=sinks.requires_grad_())


@pytest.mark.parametrize(
    ("shape", "option"), grid(OPTIONS, ("causal-window", "key-lengths", "bool-mask"))
)
def test_sinks_and_their_gradients_match_reference(shape: str, option: str) -> None:
    # forward and every gradient, the sinks' own included, against the reference's dense
    # softmax with the sink in its denominator; "key-lengths" has an entry of length 0 and
    # "bool-mask"/"bias" a query that sees nothing: their rows are all sink
    q, k, v = make_inputs(shape)
    assert_matches_reference("local", q, k, v, normalize=_sinks(q.shape[1]),
                             **banded(option, q, k))


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((1, 2, 1, 1025, 1025, 8), {"window": (128, 128)}),
        ((2, 4, 2, 700, 1000, 8), {"window": (40, 20), "causal": True}),
        ((2, 8, 2, 600, 600, 16), {"window": (127, 0), "causal": True}),  # gpt-oss's sliding layer
        ((2, 2, 2, 1000, 1000, 8), {"window": (30, 30), "mask": KeyLengths(torch.tensor([1000, 0]))}),
        ((1, 4, 2, 1, 1025, 8), {"window": (64, 64), "causal": True}),  # decoding
    ],
)
def test_sinks_over_several_groups_and_padded_ends(monkeypatch, shape, kwargs) -> None:
    monkeypatch.setattr(importlib.import_module("attnkit.kernels.band"), "_GROUP_ELEMENTS", 1)
    q, k, v = make_inputs(shape)
    assert_matches_reference("local", q, k, v, normalize=_sinks(q.shape[1]), **kwargs)


def test_sinks_per_query_and_off_the_fused_path() -> None:
    # per-query sinks (B, Hq, Lq); tiles PyTorch's fused kernel cannot take (a transposed k,
    # values narrower than keys) make their lse with online.attend_ instead
    q, k, v = make_inputs((2, 4, 2, 97, 97, 16))
    norm = _sinks(2, 4, 97, seed=6)
    assert_matches_reference("local", q, k, v, normalize=norm, window=(9, 2))
    k_t = k.detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()
    assert_matches_reference("local", q, k_t, v, normalize=norm, window=(9, 2), causal=True)
    v_narrow = v.detach()[..., :5].clone().requires_grad_()
    assert_matches_reference("local", q, k, v_narrow, normalize=norm, window=(9, 2))


def test_rows_with_only_the_sink_give_zeros_without_nan() -> None:
    # 30 queries sit before every key: all their weight is on the sink, so the output and
    # every gradient of theirs is 0; the rest equal reference
    q, k, v = make_inputs((1, 2, 2, 40, 10, 8))
    norm = _sinks(2)
    kwargs = {"causal": True, "window": (4, 0), "normalize": norm}
    out = attnkit.attention(q, k, v, backend="local", **kwargs)
    out.sum().backward()
    sinks = norm.params["sinks"]
    assert torch.all(out[:, :, :30] == 0) and torch.all(q.grad[:, :, :30] == 0)
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v, sinks))
    assert_matches_reference("local", q, k, v, **kwargs)
    # σ = −inf and nothing to see: no sink and no key, still 0 and no NaN
    none = attnkit.Normalizer("softmax_with_sinks",
                              sinks=torch.tensor([-torch.inf, 0.0], dtype=torch.float64))
    assert_matches_reference("local", q, k, v, causal=True, window=(4, 0), normalize=none)


def test_sinks_gradcheck() -> None:
    # float64 finite differences of every input, the per-head sinks included; GQA, causal
    # window and key padding
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, h, 21, 4, generator=gen, dtype=torch.float64, requires_grad=True)
               for h in (4, 2, 2))
    sinks = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    lengths = KeyLengths(torch.tensor([21, 9]))

    def run(q, k, v, sinks):
        norm = attnkit.Normalizer("softmax_with_sinks", sinks=sinks)
        return attnkit.attention(q, k, v, causal=True, window=(3, 0), mask=lengths,
                                 normalize=norm, backend="local")

    assert torch.autograd.gradcheck(run, (q, k, v, sinks))


def test_dispatch_runs_local_for_sinks_on_a_window() -> None:
    q, k, v = make_inputs((1, 4, 2, 1025, 1025, 8))
    norm = _sinks(4)
    assert attnkit.explain_dispatch(q, k, v, window=(127, 0), causal=True,
                                    normalize=norm).kernel == "local"


def test_sinks_in_bfloat16_match_reference_within_rounding() -> None:
    # 16-bit inputs and sinks: local computes in float32 as reference does, so the two differ
    # by the rounding of their bfloat16 results; the sinks' gradient comes back in bfloat16
    q, k, v = make_inputs((1, 4, 2, 300, 300, 32), dtype=torch.bfloat16)
    sinks = torch.tensor([0.0, 1.5, -2.0, 4.0], dtype=torch.bfloat16, requires_grad=True)
    norm = attnkit.Normalizer("softmax_with_sinks", sinks=sinks)
    cot = torch.randn(1, 4, 300, 32, generator=torch.Generator().manual_seed(3))
    found = {}
    for backend in ("local", "reference"):
        out = attnkit.attention(q, k, v, window=(31, 0), causal=True, normalize=norm,
                                backend=backend)
        found[backend] = (out, *torch.autograd.grad((out.float() * cot).sum(), (q, k, v, sinks)))
    for ours, ref in zip(found["local"], found["reference"], strict=True):
        assert ours.dtype == torch.bfloat16
        torch.testing.assert_close(ours.float(), ref.float(), rtol=2e-2, atol=2e-2)
