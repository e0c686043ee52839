"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Self-attention mixes tokens layer after layer, so the raw weights of a deep layer say little
about the input tokens. Rollout follows the mixing down to the input::

    Ā_l = head average of layer l's weights                    (B, L, L)
    Ã_l = 0.5 Ā_l + 0.5 I, rows renormalised                    (the residual connection)
    rollout = Ã_N ··· Ã_1                                       (B, L, L)

Row ``i`` of the result says how much of the top-layer token ``i`` comes from each input
token. Shape legend: N layers, B batch, H heads, L tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

HeadFusion = Literal["mean", "max", "min"]


def rollout(
    attentions: Tensor | Sequence[Tensor],
    *,
    residual: bool = True,
    head_fusion: HeadFusion = "mean",
) -> Tensor:
    """Roll attention out across layers.

    Args:
        attentions: the self-attention weights of the layers, first layer first: a tensor
            ``(N, B, H, L, L)`` (what :meth:`Recording.stack` returns) or a sequence of ``N``
            tensors ``(B, H, L, L)``. Floating point, finite.
        residual: add the identity for the residual connection (``Ã = 0.5 Ā + 0.5 I``, rows
            renormalised), as in the paper. With ``False`` the head-fused weights are
            multiplied as they are (rows renormalised).
        head_fusion: how heads become one matrix: ``"mean"`` (the paper), ``"max"`` or ``"min"``.

    Returns:
        ``(B, L, L)`` float32 (float64 stays float64) on the input device; each row sums to 1,
        except rows that were all zero in some layer without the residual term (e.g. padded
        queries), which stay 0 rather than becoming NaN.

    Raises:
        TypeError: not tensors, or not floating point.
        ValueError: wrong ranks, layers of different shapes, non-square weights (rollout needs
            self-attention), an empty list, non-finite values, or an unknown ``head_fusion``.
    """
    stacked = _as_stack(attentions)  # (N, B, H, L, L)
    if head_fusion not in ("mean", "max", "min"):
        raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
    if not isinstance(residual, bool):
        raise TypeError(f"residual must be a bool, got {type(residual).__name__}")
    compute = torch.promote_types(stacked.dtype, torch.float32)
    stacked = stacked.to(compute)
    if head_fusion == "mean":
        fused = stacked.mean(dim=2)  # (N, B, L, L)
    elif head_fusion == "max":
        fused = stacked.amax(dim=2)  # (N, B, L, L)
    else:
        fused = stacked.amin(dim=2)  # (N, B, L, L)
    if residual:
        eye = torch.eye(fused.shape[-1], dtype=compute, device=fused.device)  # (L, L)
        fused = 0.5 * fused + 0.5 * eye
    fused = _renormalise_rows(fused)  # (N, B, L, L)
    result = fused[0]  # (B, L, L)
    for layer in fused[1:]:
        result = torch.matmul(layer, result)  # (B, L, L): Ã_l · (Ã_{l-1} ··· Ã_1)
    return result


def _renormalise_rows(a: Tensor) -> Tensor:
    """Rows divided by their sums; an all-zero row stays zero (no 0/0)."""
    sums = a.sum(dim=-1, keepdim=True)  # (..., L, 1)
    return torch.where(sums > 0, a / sums.clamp_min(torch.finfo(a.dtype).tiny), a)


def _as_stack(attentions: Tensor | Sequence[Tensor]) -> Tensor:
    if isinstance(attentions, Tensor):
        stacked = attentions
        if stacked.dim() != 5:
            raise ValueError(
                f"attentions must be (N, B, H, L, L) or a list of (B, H, L, L), got a tensor of "
                f"shape {tuple(stacked.shape)}"
                + ("; for one example add the batch dim" if stacked.dim() == 4 else "")
            )
    elif isinstance(attentions, Sequence) and not isinstance(attentions, (str, bytes)):
        if len(attentions) == 0:
            raise ValueError("attentions is empty: rollout needs at least one layer")
        for i, a in enumerate(attentions):
            if not isinstance(a, Tensor):
                raise TypeError(f"attentions[{i}] must be a tensor, got {type(a).__name__}")
            if a.dim() != 4:
                raise ValueError(
                    f"attentions[{i}] must be (B, H, L, L), got shape {tuple(a.shape)}"
                )
        shapes = [tuple(a.shape) for a in attentions]
        if len(set(shapes)) != 1:
            raise ValueError(f"the layers' weights must share one shape, got {shapes}")
        stacked = torch.stack(list(attentions))  # (N, B, H, L, L)
    else:
        raise TypeError(
            f"attentions must be a tensor or a sequence of tensors, got {type(attentions).__name__}"
        )
    if not stacked.is_floating_point():
        raise TypeError(f"attentions must be floating point, got dtype {stacked.dtype}")
    n, _b, _h, lq, lk = stacked.shape
    if n == 0:
        raise ValueError("attentions is empty: rollout needs at least one layer")
    if lq != lk:
        raise ValueError(
            f"rollout needs self-attention (L × L weights), got Lq={lq}, Lk={lk} "
            f"(shape {tuple(stacked.shape)})"
        )
    if not bool(torch.isfinite(stacked).all()):
        raise ValueError("attentions contain NaN or infinite values")
    return stacked
