"""``sequence_cross_entropy`` against PyTorch's ``cross_entropy`` and the formula written here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.training import sequence_cross_entropy

B, T, V, PAD = 3, 7, 11, 0


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    targets = torch.randint(1, V, (B, T), generator=g)
    targets[0, 5:] = PAD
    targets[2, 2:] = PAD
    return logits, targets


def _by_hand(logits: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """(1 - eps) * -log p_y + eps / V * sum_c -log p_c, averaged over non-pad tokens."""
    total, count = 0.0, 0
    for b in range(B):
        for t in range(T):
            y = int(targets[b, t])
            if y == PAD:
                continue
            z = logits[b, t]
            log_p = z - torch.log(torch.exp(z - z.max()).sum()) - z.max()
            total = total + (1 - eps) * -log_p[y] + eps * (-log_p).sum() / V
            count += 1
    return total / count


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_matches_torch_and_formula(eps: float) -> None:
    logits, targets = _data()
    logits.requires_grad_(True)
    loss, n = sequence_cross_entropy(logits, targets, pad_id=PAD, label_smoothing=eps)
    assert n == int((targets != PAD).sum())
    expected = F.cross_entropy(
        logits.detach().reshape(-1, V), targets.reshape(-1), ignore_index=PAD,
        label_smoothing=eps,
    )
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss, _by_hand(logits.detach(), targets, eps))
    # Gradient against the formula's own gradient (float64 autograd).
    (grad,) = torch.autograd.grad(loss, logits)
    ref_logits = logits.detach().clone().requires_grad_(True)
    (ref_grad,) = torch.autograd.grad(_by_hand(ref_logits, targets, eps), ref_logits)
    torch.testing.assert_close(grad, ref_grad)


def test_no_pad_counts_every_position() -> None:
    logits, targets = _data(1)
    loss, n = sequence_cross_entropy(logits, targets, pad_id=None)
    assert n == B * T
    expected = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_all_padding_is_zero_not_nan() -> None:
    logits = torch.randn(2, 3, V, requires_grad=True)
    loss, n = sequence_cross_entropy(logits, torch.zeros(2, 3, dtype=torch.long), pad_id=PAD)
    assert n == 0 and float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_bad_input_is_named() -> None:
    logits, targets = _data()
    with pytest.raises(ValueError, match=r"logits .*\(3, 7, 11\).*targets .*\(3, 6\)"):
        sequence_cross_entropy(logits, targets[:, :6], pad_id=PAD)
    with pytest.raises(TypeError, match="targets must be an integer"):
        sequence_cross_entropy(logits, targets.float(), pad_id=PAD)
    with pytest.raises(TypeError, match="logits must be a floating"):
        sequence_cross_entropy(targets.unsqueeze(-1), targets, pad_id=PAD)
    with pytest.raises(ValueError, match="label_smoothing"):
        sequence_cross_entropy(logits, targets, pad_id=PAD, label_smoothing=1.0)
    targets[1, 1] = V
    with pytest.raises(ValueError, match=rf"\[0, {V}\)"):
        sequence_cross_entropy(logits, targets, pad_id=PAD)


def test_half_precision_logits_are_computed_in_float32() -> None:
    logits, targets = _data(2)
    loss, _ = sequence_cross_entropy(logits.bfloat16(), targets, pad_id=PAD, label_smoothing=0.1)
    assert loss.dtype == torch.float32
    expected = _by_hand(logits.bfloat16().double(), targets, 0.1)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
