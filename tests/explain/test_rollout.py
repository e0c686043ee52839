"""attnkit.explain.rollout against Abnar & Zuidema (2020) written out here with numpy:
Ã_l = 0.5 Ā_l + 0.5 I (Ā_l the head average), rows renormalised, rollout = Ã_L ··· Ã_1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnkit.explain import rollout


def numpy_rollout(attn: np.ndarray, residual: bool, fuse=np.mean) -> np.ndarray:
    """attn (N, B, H, L, L) -> (B, L, L), one batch item and one layer at a time."""
    n, b, _, length, _ = attn.shape
    out = np.zeros((b, length, length))
    for i in range(b):
        result = np.eye(length)
        for layer in range(n):
            a = fuse(attn[layer, i], axis=0)
            if residual:
                a = 0.5 * a + 0.5 * np.eye(length)
            a = a / a.sum(axis=-1, keepdims=True)
            result = a @ result  # Ã_l · (Ã_{l-1} ··· Ã_1)
        out[i] = result
    return out


def random_attention(n=3, b=2, h=4, length=6, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(n, b, h, length, length, generator=g), dim=-1)


@pytest.mark.parametrize("residual", [True, False])
def test_matches_the_published_formula(residual: bool) -> None:
    attn = random_attention()
    expected = numpy_rollout(attn.double().numpy(), residual)
    got = rollout(attn, residual=residual)
    assert got.shape == (2, 6, 6) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(-1).numpy(), 1.0, atol=1e-5)
    # a list of per-layer tensors is the same as the stacked tensor
    torch.testing.assert_close(rollout(list(attn), residual=residual), got)


def test_the_order_of_layers_matters_and_is_last_times_first() -> None:
    attn = random_attention(n=2, b=1, h=1, length=4, seed=3).double()
    a1, a2 = (0.5 * attn[i, 0, 0] + 0.5 * torch.eye(4) for i in range(2))
    torch.testing.assert_close(rollout(attn)[0], a2 @ a1)
    assert not torch.allclose(rollout(attn)[0], a1 @ a2)
    assert rollout(attn).dtype == torch.float64


def test_one_layer_and_identity_layers() -> None:
    attn = random_attention(n=1, b=1, h=2, length=3)
    torch.testing.assert_close(rollout(attn)[0], 0.5 * attn[0, 0].mean(0) + 0.5 * torch.eye(3))
    eye = torch.eye(5).expand(4, 1, 3, 5, 5)
    torch.testing.assert_close(rollout(eye)[0], torch.eye(5))


@pytest.mark.parametrize("fusion,fuse", [("max", np.max), ("min", np.min)])
def test_head_fusion(fusion: str, fuse) -> None:
    attn = random_attention(seed=4)
    expected = numpy_rollout(attn.double().numpy(), True, fuse)
    np.testing.assert_allclose(rollout(attn, head_fusion=fusion).numpy(), expected, atol=1e-5)


def test_all_zero_rows_give_no_nan() -> None:
    attn = random_attention(n=2, b=1, h=2, length=4)
    attn[:, :, :, 3] = 0.0  # a padded query attends to nothing (weights 0, as attention() gives)
    with_residual = rollout(attn)
    assert torch.isfinite(with_residual).all()
    torch.testing.assert_close(with_residual[0, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    without = rollout(attn, residual=False)
    assert torch.isfinite(without).all()
    assert without[0, 3].abs().sum() == 0


def test_bad_input_raises_clear_errors() -> None:
    attn = random_attention()
    with pytest.raises(ValueError, match=r"Lq=3, Lk=6"):
        rollout(attn[..., :3, :])
    with pytest.raises(ValueError, match="add the batch dim"):
        rollout(attn[:, 0])
    with pytest.raises(ValueError, match="empty"):
        rollout([])
    with pytest.raises(ValueError, match="share one shape"):
        rollout([attn[0], attn[1, :1]])
    with pytest.raises(ValueError, match=r"attentions\[1\] must be \(B, H, L, L\)"):
        rollout([attn[0], attn[1, 0]])
    with pytest.raises(TypeError, match=r"attentions\[0\] must be a tensor"):
        rollout([np.zeros((1, 1, 2, 2))])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="floating point"):
        rollout(torch.ones(1, 1, 1, 2, 2, dtype=torch.long))
    bad = attn.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rollout(bad)
    with pytest.raises(ValueError, match="head_fusion"):
        rollout(attn, head_fusion="median")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tensor or a sequence"):
        rollout("attn")  # type: ignore[arg-type]
