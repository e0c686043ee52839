"""Losses shared by the sequence tasks.

Shape legend: B batch, T target length, V vocabulary size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sequence_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    *,
    pad_id: int | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, int]:
    """Mean token cross-entropy over the non-padding targets, with optional label smoothing.

    With smoothing ``eps`` the loss of one token of class ``y`` is
    ``(1 - eps) * -log p_y + eps / V * sum_c -log p_c`` (Szegedy et al. 2016; the definition
    of ``torch.nn.functional.cross_entropy``, which computes it here; half-precision logits
    are upcast to float32 first).

    Args:
        logits: ``(B, T, V)`` floating point, unnormalised.
        targets: ``(B, T)`` integer class ids in ``[0, V)``; ``pad_id`` marks padding.
        pad_id: targets equal to it are ignored; ``None`` counts every position.
        label_smoothing: ``eps`` in ``[0, 1)``.

    Returns:
        ``(loss, n_tokens)``: the scalar mean over the ``n_tokens`` counted targets. When every
        target is padding the loss is ``0`` (still connected to ``logits``), never NaN.

    Raises:
        TypeError: ``logits`` not floating point, or ``targets`` not integer.
        ValueError: mismatched shapes, a bad ``label_smoothing``, or a target outside
            ``[0, V)`` that is not ``pad_id``.
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating tensor (B, T, V), got {_describe(logits)}")
    if not isinstance(targets, Tensor) or targets.is_floating_point() or targets.is_complex():
        raise TypeError(f"targets must be an integer tensor (B, T), got {_describe(targets)}")
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (B, T, V) and targets (B, T); got logits {tuple(logits.shape)} "
            f"and targets {tuple(targets.shape)}"
        )
    if isinstance(label_smoothing, bool) or not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    vocab = logits.shape[-1]
    targets = targets.long()
    everything = torch.ones_like(targets, dtype=torch.bool)  # (B, T)
    counted = everything if pad_id is None else targets != pad_id  # (B, T)
    real = targets[counted]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= vocab):
        raise ValueError(
            f"targets must lie in [0, {vocab}) outside padding (pad_id={pad_id}); "
            f"got values from {int(real.min())} to {int(real.max())}"
        )
    n_tokens = int(counted.sum())
    if n_tokens == 0:
        return logits.sum() * 0.0, 0
    flat_logits = logits.reshape(-1, vocab)  # (B*T, V)
    if flat_logits.dtype in (torch.float16, torch.bfloat16):
        flat_logits = flat_logits.float()
    flat_targets = targets.reshape(-1)  # (B*T,)
    total = F.cross_entropy(
        flat_logits,
        flat_targets,
        ignore_index=pad_id if pad_id is not None else -100,
        label_smoothing=float(label_smoothing),
        reduction="sum",
    )
    return total / n_tokens, n_tokens


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"tensor {tuple(x.shape)} {x.dtype}"
    return type(x).__name__
