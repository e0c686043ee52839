"""What PyTorch users pass that is not a plain tensor: ``torch.nn.attention.bias.CausalBias``,
other tensor subclasses, nested (jagged) tensors. Each is read as what it means, or refused
by name — never read through its storage (a ``CausalBias``'s storage is uninitialised memory).

Shape legend: Lq query length, Lk key length.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.attention.bias import CausalBias, CausalVariant

# Tensor's own __torch_function__, and the one subclasses use to opt out (nn.Parameter, ...)
_PLAIN_TORCH_FUNCTION = (
    torch.Tensor.__torch_function__.__func__,
    torch._C._disabled_torch_function_impl,
)


def refuse_nested(hint: str = "", **tensors: object) -> None:
    """Raise ``TypeError`` naming the first nested tensor among ``tensors`` (``hint`` is
    appended to the message).

    attnkit takes padded tensors; a jagged batch becomes ``t.to_padded_tensor(0.0)`` plus
    :class:`attnkit.KeyLengths` of its lengths.
    """
    for name, t in tensors.items():
        if isinstance(t, Tensor) and t.is_nested:
            raise TypeError(
                f"{name} is a nested (jagged) tensor, which attnkit does not take: pad it "
                f"({name}.to_padded_tensor(0.0)) and pass the lengths as attnkit.KeyLengths"
                + hint
            )


def check_readable(name: str, mask: Tensor) -> None:
    """Raise ``TypeError`` if ``mask`` is a tensor subclass whose values attnkit cannot read
    (one with its own ``__torch_function__``, whose storage need not hold its values).
    ``nn.Parameter``, buffers and tracing tensors (FakeTensor) read as plain tensors."""
    fn = type(mask).__torch_function__
    if getattr(fn, "__func__", fn) not in _PLAIN_TORCH_FUNCTION:
        cls = type(mask)
        raise TypeError(
            f"{name}: a {cls.__module__}.{cls.__qualname__} cannot be read by attnkit (a tensor "
            "subclass with its own __torch_function__); pass a plain bool or float tensor"
        )


def causal_bias(
    mask: object, causal: bool | str, q_len: int, kv_len: int, device: torch.device
) -> tuple[object, bool | str]:
    """``(mask, causal)`` with a ``CausalBias`` ``mask`` turned into attnkit's causal structure.

    ``causal_lower_right(Lq, Lk)`` is attnkit's ``causal=True`` (bottom-right),
    ``causal_upper_left(Lq, Lk)`` its ``causal="top_left"``. Other masks pass through unchanged.

    Raises:
        TypeError: a ``CausalBias`` that went through a tensor operation (it lost its fields).
        ValueError: its sizes are not ``(Lq, Lk)``, or ``causal=True`` is given as well
            (``scaled_dot_product_attention`` refuses that too).
    """
    if not isinstance(mask, CausalBias):
        return mask, causal
    if not hasattr(mask, "variant"):  # a tensor op's result: a CausalBias without its fields
        raise TypeError(
            "mask: this CausalBias came out of a tensor operation and no longer says which "
            "causal mask it is; pass causal_lower_right(Lq, Lk) / causal_upper_left(Lq, Lk) itself"
        )
    if (mask.seq_len_q, mask.seq_len_kv) != (q_len, kv_len):
        raise ValueError(
            f"mask: CausalBias is for (Lq, Lk) = ({mask.seq_len_q}, {mask.seq_len_kv}) but "
            f"the queries and keys are ({q_len}, {kv_len})"
        )
    if causal:
        raise ValueError("mask: a CausalBias already is the causal mask; do not pass causal=True")
    if mask.variant == CausalVariant.LOWER_RIGHT or q_len == kv_len:
        return None, True
    return None, "top_left"  # query i sees keys 0..i
