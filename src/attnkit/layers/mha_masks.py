"""The masks of ``torch.nn.MultiheadAttention.forward``, read as PyTorch reads them, turned into
one attnkit mask.

PyTorch's conventions: a bool mask is **True = masked out**; a float mask is added to the
scores; any other dtype is refused (PyTorch raises ``AssertionError: only bool and floating
types ...``; attnkit raises ``TypeError`` naming the argument). A float mask is never rounded:
it is used in the wider of its own dtype and the input's (a float64 module keeps float64
masks; a bfloat16 module keeps a float32 mask float32, as PyTorch's SDPA path does).

Shape legend: B batch, H query heads, L query length, S key length.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.attention.bias import CausalBias

from attnkit import masks
from attnkit.torch_inputs import check_readable


def check_torch_mask(name: str, mask: Tensor) -> None:
    """Raise ``TypeError`` unless ``mask`` is a bool or float tensor attnkit can read."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a tensor or None, got {type(mask).__name__}")
    if isinstance(mask, CausalBias):
        raise TypeError(
            f"{name}: torch.nn.MultiheadAttention does not take a CausalBias either; pass "
            "is_causal=True without a mask (bottom-right) or a bool mask (True = masked out)"
        )
    check_readable(name, mask)
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(
            f"{name} must be bool (True = masked out, PyTorch's polarity) or float (added to "
            f"the scores), got {mask.dtype}; torch.nn.MultiheadAttention refuses it too"
        )


def merge(
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    extra_bias: Tensor | None,
    *,
    batch: int,
    heads: int,
    q_len: int,
    kv_len: int,
    dtype: torch.dtype,
) -> Tensor | None:
    """PyTorch-convention ``key_padding_mask (B, S)``, ``attn_mask (L, S)`` or
    ``(B·H, L, S)`` and a float ``extra_bias (H, L, S)`` (ALiBi) as one attnkit mask: bool
    ``(B|1, H|1, L, S)`` **True = may attend** when every part is bool, otherwise a float
    bias in the widest of ``dtype`` (the input's) and the float parts' dtypes; ``None`` when
    there is nothing.

    Raises:
        TypeError: a mask that is neither bool nor float, or a tensor subclass.
        ValueError: a mask of the wrong shape (the expected shapes are named).
    """
    parts: list[Tensor] = []
    if key_padding_mask is not None:
        check_torch_mask("key_padding_mask", key_padding_mask)
        kpm = key_padding_mask.unsqueeze(0) if key_padding_mask.dim() == 1 else key_padding_mask
        if kpm.shape != (batch, kv_len):
            raise ValueError(
                f"key_padding_mask must be (batch, S) = ({batch}, {kv_len}), got "
                f"{tuple(key_padding_mask.shape)}"
            )
        parts.append(masks.from_torch(kpm).reshape(batch, 1, 1, kv_len))  # (B, 1, 1, S)
    if attn_mask is not None:
        check_torch_mask("attn_mask", attn_mask)
        if attn_mask.shape == (q_len, kv_len):
            parts.append(masks.from_torch(attn_mask).reshape(1, 1, q_len, kv_len))  # (1, 1, L, S)
        elif attn_mask.shape == (batch * heads, q_len, kv_len):
            am = masks.from_torch(attn_mask)
            parts.append(am.reshape(batch, heads, q_len, kv_len))  # (B, H, L, S)
        else:
            raise ValueError(
                f"attn_mask must be (L, S) = ({q_len}, {kv_len}) or (batch·heads, L, S) = "
                f"({batch * heads}, {q_len}, {kv_len}), got {tuple(attn_mask.shape)}"
            )
    if extra_bias is not None:
        parts.append(extra_bias.unsqueeze(0))  # (1, H, L, S)
    if not parts:
        return None
    if all(p.dtype == torch.bool for p in parts):
        return masks.combine(*parts)
    for p in parts:
        if p.dtype != torch.bool:
            dtype = torch.promote_types(dtype, p.dtype)
    total = torch.zeros((), dtype=dtype, device=parts[0].device)
    for p in parts:
        total = total + (masks.to_bias(p, dtype) if p.dtype == torch.bool else p.to(dtype))
    return total
