"""``backend="auto"``: which kernel serves which request, and the reasons given for the others."""

from __future__ import annotations

import pytest
import torch

import attnkit
from attnkit import KeyLengths, kernels
from tests.kernels.test_additive import additive_score


def qkv(lq: int = 300, lk: int = 300) -> tuple[torch.Tensor, ...]:
    return torch.randn(1, 2, lq, 16), torch.randn(1, 2, lk, 16), torch.randn(1, 2, lk, 16)


def test_every_kernel_is_registered_in_auto_order() -> None:
    assert list(kernels.kernels()) == ["local", "sdpa", "chunked", "additive", "reference"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "sdpa"),
        ({"causal": True}, "sdpa"),
        ({"return_weights": True}, "chunked"),
        ({"return_weights": True, "window": (8, 8)}, "chunked"),
        ({"window": (8, 8)}, "local"),
        ({"window": (16, 0), "causal": True}, "local"),
        ({"window": (200, 200)}, "sdpa"),
        ({"normalize": "sparsemax"}, "reference"),
    ],
)
def test_auto_picks_the_fastest_kernel_that_can_serve(kwargs, expected: str) -> None:
    q, k, v = qkv()
    dispatch = attnkit.explain_dispatch(q, k, v, **kwargs)
    assert dispatch.kernel == expected
    assert set(dispatch.passed_over) == set(kernels.kernels()) - {expected}


def test_additive_scores_go_to_the_additive_kernel() -> None:
    q, k, v = qkv()
    dispatch = attnkit.explain_dispatch(q, k, v, score=additive_score(16, 16))
    assert dispatch.kernel == "additive"
    assert "not a dot product" in dispatch.passed_over["sdpa"]


def test_additive_declines_a_decoding_step_with_a_small_naive_tensor() -> None:
    # An RNN/captioning step: B=32, one query, 49 keys; the reference is faster there.
    q, k, v = torch.randn(32, 1, 1, 16), torch.randn(32, 1, 49, 16), torch.randn(32, 1, 49, 16)
    dispatch = attnkit.explain_dispatch(q, k, v, score=additive_score(16, 16))
    assert dispatch.kernel == "reference"
    assert "declined under auto" in dispatch.passed_over["additive"]
    assert "reference is faster" in dispatch.passed_over["additive"]
    named = attnkit.explain_dispatch(q, k, v, score=additive_score(16, 16), backend="additive")
    assert named.kernel == "additive"


def test_sdpa_declines_a_huge_dense_mask_but_still_runs_when_named(monkeypatch) -> None:
    monkeypatch.setattr(kernels.sdpa, "DENSE_LIMIT", 1 << 16)
    q, k, v = qkv(lq=200, lk=300)
    dispatch = attnkit.explain_dispatch(q, k, v, causal=True)  # Lq != Lk: a dense mask
    assert dispatch.kernel == "chunked"
    assert "MiB of dense mask" in dispatch.passed_over["sdpa"]
    assert attnkit.explain_dispatch(q, k, v, causal=True, backend="sdpa").kernel == "sdpa"
    torch.testing.assert_close(
        attnkit.attention(q, k, v, causal=True, backend="sdpa"),
        attnkit.attention(q, k, v, causal=True),
    )


def test_a_named_kernel_that_cannot_serve_raises_with_its_reason() -> None:
    q, k, v = qkv()
    with pytest.raises(ValueError, match="sdpa: returning weights not supported"):
        attnkit.attention(q, k, v, return_weights=True, backend="sdpa")
    with pytest.raises(ValueError, match="additive: score 'scaled_dot' not supported"):
        attnkit.attention(q, k, v, backend="additive")
    with pytest.raises(ValueError, match="chunked: normalizer 'hardmax' not supported"):
        attnkit.attention(q, k, v, normalize="hardmax", backend="chunked")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mask": KeyLengths(torch.tensor([300, 200]))},  # causal Lq == Lk, but padded
        {"mask": torch.zeros(1, 1, 1, 300)},  # causal Lq == Lk with a float bias
    ],
    ids=["key-lengths", "bias"],
)
def test_sdpa_counts_the_band_it_builds_when_is_causal_cannot_serve(monkeypatch, kwargs) -> None:
    """With padding or a bias, causal goes to PyTorch as a dense (Lq, Lk) mask: 300·300 bools
    and floats per batch entry are over a 64 KiB limit, one row of them is not."""
    monkeypatch.setattr(kernels.sdpa, "DENSE_LIMIT", 1 << 16)
    q, k, v = (torch.cat([t, t]) for t in qkv())  # batch 2
    dispatch = attnkit.explain_dispatch(q, k, v, causal=True, **kwargs)
    assert dispatch.kernel != "sdpa"
    assert "MiB of dense mask" in dispatch.passed_over["sdpa"]
