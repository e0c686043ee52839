"""The one ``mask`` argument a layer hands to :func:`attnkit.attention`.

Structure is kept whenever it is all there is: key lengths travel as :class:`KeyLengths`
(the block kernels skip padded key blocks, ``sdpa`` gets no ``(Lq, Lk)`` mask), and only
join a dense mask when another mask has to be applied too.

PyTorch's conventions (``torch.nn.MultiheadAttention.forward``): a bool mask is **True =
masked out**; a float mask is added to the scores; any other dtype is refused (PyTorch raises
``AssertionError: only bool and floating types ...``; attnkit raises ``TypeError`` naming the
argument). A float mask is never rounded: it is used in the wider of its own dtype and the
input's (a float64 module keeps float64 masks; a bfloat16 module keeps a float32 mask float32,
as PyTorch's SDPA path does).

Shape legend: B batch, H query heads, L query length, S key length.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.attention.bias import CausalBias

from attnkit import masks
from attnkit.key_lengths import KeyLengths
from attnkit.torch_inputs import check_readable

KeyPadding = Tensor | KeyLengths


def with_key_lengths(
    mask: Tensor | None, key_lengths: Tensor | None, kv_len: int
) -> Tensor | KeyLengths | None:
    """Bool ``mask`` (True = may attend) and ``key_lengths (B,)`` as one ``mask`` argument:
    :class:`KeyLengths` when there are only lengths, their AND ``(B, 1, L|1, S)`` otherwise."""
    if key_lengths is None:
        return mask
    lengths = KeyLengths(key_lengths)
    if mask is None:
        return lengths
    return masks.combine(mask, masks.key_padding(lengths.lengths, kv_len))  # (B, 1, L|1, S)


def padding_as_lengths(real: Tensor) -> KeyLengths | None:
    """:class:`KeyLengths` of a bool ``real (B, S)`` (True = real key) whose padding is on the
    right and/or the left (:meth:`KeyLengths.from_mask`), else ``None``; always ``None`` under
    ``torch.compile``/``torch.export``, where the values are unknown (the traced graph keeps
    the dense mask, right for any padding)."""
    if torch.compiler.is_compiling():
        return None
    return KeyLengths.from_mask(real)


def is_square_causal(attn_mask: Tensor, q_len: int, kv_len: int) -> bool:
    """Whether a PyTorch-convention ``attn_mask (L, S)`` is exactly the square causal mask
    (bool True above the diagonal, or float ``-inf`` above and 0 elsewhere), which
    ``causal=True`` describes without materialising it. Always ``False`` under
    ``torch.compile``/``torch.export``, where the values are unknown (the mask is then used as
    given)."""
    if torch.compiler.is_compiling() or q_len != kv_len or attn_mask.shape != (q_len, kv_len):
        return False
    future = torch.ones(q_len, kv_len, dtype=torch.bool, device=attn_mask.device).triu(1)
    if attn_mask.dtype == torch.bool:
        return torch.equal(attn_mask, future)
    want = torch.zeros(future.shape, dtype=attn_mask.dtype, device=attn_mask.device)
    return torch.equal(attn_mask, want.masked_fill(future, float("-inf")))


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
    key_padding_mask: KeyPadding | None,
    attn_mask: Tensor | None,
    extra_bias: Tensor | None,
    *,
    batch: int,
    heads: int,
    q_len: int,
    kv_len: int,
    dtype: torch.dtype,
) -> Tensor | KeyLengths | None:
    """``key_padding_mask`` (PyTorch's ``(B, S)`` or attnkit's :class:`KeyLengths`),
    ``attn_mask (L, S)`` or ``(B·H, L, S)`` and a float ``extra_bias (H, L, S)`` (ALiBi) or
    ``(B, H, L, S)`` (relative positions) as one attnkit mask: the :class:`KeyLengths` alone
    when nothing else is given; a bool ``(B|1, H|1, L, S)`` **True = may attend** when every
    part is bool; otherwise a float
    bias in the widest of ``dtype`` (the input's) and the float parts' dtypes; ``None`` when
    there is nothing.

    Raises:
        TypeError: a mask that is neither bool nor float, or a tensor subclass.
        ValueError: a mask of the wrong shape (the expected shapes are named).
    """
    parts: list[Tensor] = []
    if isinstance(key_padding_mask, KeyLengths):
        if key_padding_mask.lengths.shape[0] != batch:
            raise ValueError(
                f"key_padding_mask: KeyLengths has {key_padding_mask.lengths.shape[0]} entries "
                f"but the batch is {batch}"
            )
        if attn_mask is None and extra_bias is None:
            return key_padding_mask
        parts.append(key_padding_mask.as_mask(kv_len))  # (B, 1, 1, S)
    elif key_padding_mask is not None:
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
        extra = extra_bias if extra_bias.dim() == 4 else extra_bias.unsqueeze(0)
        parts.append(extra)  # (B|1, H, L, S)
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
