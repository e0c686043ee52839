"""The ``sdpa`` kernel (PyTorch's fused attention) against ``reference``."""

from __future__ import annotations

import pytest

from tests.kernels._checks import (
    OPTIONS,
    assert_lowp_within_rule,
    assert_matches_reference,
    grid,
    make_inputs,
    option_kwargs,
)


@pytest.mark.parametrize(("shape", "option"), grid(OPTIONS, ("plain", "causal")))
def test_output_and_gradients_match_reference(shape: str, option: str) -> None:
    q, k, v = make_inputs(shape)
    assert_matches_reference("sdpa", q, k, v, **option_kwargs(option, q, k))


@pytest.mark.parametrize("kwargs", [{}, {"causal": True}])
def test_bfloat16_within_twice_pytorchs_own_error(kwargs) -> None:
    assert_lowp_within_rule("sdpa", (1, 2, 2, 97, 130, 64), **kwargs)


def test_causal_with_a_float_mask() -> None:
    """PyTorch refuses ``is_causal`` with an ``attn_mask``: the kernel must build the mask."""
    q, k, v = make_inputs("square-97-d8")
    bias = option_kwargs("bias", q, k)["mask"]
    assert_matches_reference("sdpa", q, k, v, causal=True, mask=bias)
