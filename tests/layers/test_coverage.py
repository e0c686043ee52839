"""Coverage attention against See et al. 2017's formula, written out independently."""

from __future__ import annotations

import pytest
import torch

from attnkit.layers.coverage import CoverageAttention


def published(layer, s, h, c, lengths):
    """e_i = vᵀ tanh(W_h h_i + W_s s + w_c c_i + b_attn); softmax over the real positions."""
    e = torch.einsum(
        "a,bia->bi",
        layer.v,
        torch.tanh(
            torch.einsum("ad,bid->bia", layer.W_h, h)
            + torch.einsum("ad,bd->ba", layer.W_s, s)[:, None, :]
            + c[..., None] * layer.w_c
            + layer.b
        ),
    )
    real = torch.arange(h.shape[1])[None, :] < lengths[:, None]
    a = torch.softmax(e.masked_fill(~real, float("-inf")), dim=-1)
    return torch.einsum("bi,bid->bd", a, h), a


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_matches_the_published_formula_forward_and_backward(backend: str) -> None:
    layer = CoverageAttention(5, 6, 7, backend=backend)
    with torch.no_grad():
        layer.b.normal_()
    s, h = torch.randn(3, 5, requires_grad=True), torch.randn(3, 9, 6, requires_grad=True)
    c = torch.rand(3, 9) * 2
    lengths = torch.tensor([9, 4, 1])
    context, weights = layer(s, h, c, key_lengths=lengths)
    ref_context, ref_weights = published(layer, s, h, c, lengths)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(context, ref_context, rtol=1e-5, atol=1e-6)
    assert torch.all(weights[1, 4:] == 0) and torch.allclose(weights.sum(-1), torch.ones(3))
    grads = torch.autograd.grad(context.square().sum(), [s, h, layer.w_c, layer.W_h])
    ref = torch.autograd.grad(ref_context.square().sum(), [s, h, layer.w_c, layer.W_h])
    for mine, theirs in zip(grads, ref, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_coverage_changes_the_scores_through_w_c() -> None:
    layer = CoverageAttention(4, 4)
    with torch.no_grad():
        layer.w_c.fill_(-3.0)  # covered positions are scored down
    s, h = torch.randn(1, 4), torch.randn(1, 5, 4)
    _, fresh = layer(s, h, torch.zeros(1, 5))
    covered = torch.zeros(1, 5)
    covered[0, fresh.argmax()] = 1.0
    _, after = layer(s, h, covered)
    assert after[0, fresh.argmax()] < fresh[0, fresh.argmax()]


def test_a_bool_mask_combines_with_lengths() -> None:
    layer = CoverageAttention(3, 3)
    mask = torch.tensor([[True, False, True, True]])
    _, w = layer(
        torch.randn(1, 3),
        torch.randn(1, 4, 3),
        torch.zeros(1, 4),
        mask=mask,
        key_lengths=torch.tensor([3]),
    )
    assert w[0, 1] == 0 and w[0, 3] == 0 and torch.isclose(w.sum(), torch.tensor(1.0))


def test_bad_shapes_are_named() -> None:
    layer = CoverageAttention(3, 4)
    with pytest.raises(ValueError, match="coverage"):
        layer(torch.randn(2, 3), torch.randn(2, 5, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"query must be \(B, Dq\)"):
        layer(torch.randn(2, 1, 3), torch.randn(2, 5, 4), torch.zeros(2, 5))
    with pytest.raises(TypeError, match="bool"):
        layer(torch.randn(2, 3), torch.randn(2, 5, 4), torch.zeros(2, 5), mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="hidden_dim"):
        CoverageAttention(3, 4, 0)
