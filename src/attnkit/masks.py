"""Dense masks for users and layers: which keys each query may attend to. **True = may
attend**, everywhere in attnkit.

Kernels never build these: :func:`attnkit.attention` describes what a call hides once, in a
:class:`~attnkit.kernels.visibility.Visibility`, which skips tiles no query can see and builds
masks tile by tile; the band rule here is that one's (:func:`in_band`).
FlexAttention-style ``mask_mod``s and their block masks are in :mod:`attnkit.flex`.

Positions: query ``i`` of ``Lq`` sits at key position ``Lk - Lq + i`` (bottom-right
alignment, what a KV cache needs), unless explicit ``positions`` are given.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.kernels.visibility import bottom_right, in_band


def query_positions(q_len: int, kv_len: int, device: torch.device | str | None = None) -> Tensor:
    """Key position of each query under bottom-right alignment: ``(Lq,)`` int64."""
    return torch.arange(q_len, device=device) + bottom_right(q_len, kv_len)


def causal(
    q_len: int,
    kv_len: int,
    *,
    device: torch.device | str | None = None,
    positions: Tensor | None = None,
) -> Tensor:
    """``(Lq, Lk)`` bool: query at position ``p`` sees keys ``0..p``.

    With ``Lq < Lk`` the last query sees every key; with ``Lq > Lk`` the first ``Lq - Lk``
    queries see nothing (their output is 0).
    """
    return window(q_len, kv_len, None, 0, device=device, positions=positions)


def window(
    q_len: int,
    kv_len: int,
    left: int | None,
    right: int | None,
    *,
    device: torch.device | str | None = None,
    positions: Tensor | None = None,
) -> Tensor:
    """``(Lq, Lk)`` bool: query at position ``p`` sees keys ``p - left .. p + right``.

    ``None`` leaves that side unbounded. ``positions (Lq,)`` overrides the bottom-right
    alignment (Luong's local-m uses ``p_t = t``: ``positions=torch.arange(Lq)``).
    """
    p = query_positions(q_len, kv_len, device) if positions is None else positions
    p = p.to(device=device if device is not None else p.device).unsqueeze(-1)  # (Lq, 1)
    j = torch.arange(kv_len, device=p.device)  # (Lk,)
    ok = in_band(j - p, left, right)  # (Lq, Lk)
    return torch.ones(p.shape[0], kv_len, dtype=torch.bool, device=p.device) if ok is None else ok


def around(centers: Tensor, kv_len: int, half_width: float) -> Tensor:
    """Bool ``(..., Lk)``: keys within ``half_width`` of real-valued ``centers (...)``.

    The window of Luong's local-p: ``|j − p_t| ≤ D``.
    """
    j = torch.arange(kv_len, device=centers.device, dtype=centers.dtype)
    return (j - centers.unsqueeze(-1)).abs() <= half_width


def key_padding(lengths: Tensor, kv_len: int, starts: Tensor | None = None) -> Tensor:
    """``(B, 1, 1, Lk)`` bool from key lengths ``(B,)``: key ``j`` is real when
    ``starts ≤ j < length`` (``starts (B,)``, default 0: left padding)."""
    j = torch.arange(kv_len, device=lengths.device)
    real = j < lengths.unsqueeze(-1)  # (B, Lk)
    if starts is not None:
        real &= j >= starts.unsqueeze(-1)
    return real.reshape(lengths.shape[0], 1, 1, kv_len)  # (B, 1, 1, Lk)


def combine(*masks: Tensor | None) -> Tensor | None:
    """AND of the given bool masks with broadcasting; ``None`` entries are ignored."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = out & m
    return out


def to_bias(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """A bool mask as an additive float bias: 0 where allowed, ``-inf`` where not."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, float("-inf")
    )


def from_torch(mask: Tensor) -> Tensor:
    """Convert a ``torch.nn.MultiheadAttention`` boolean mask (True = *masked out*) to attnkit's
    polarity (True = may attend). Float masks are additive in both and pass through."""
    return ~mask if mask.dtype == torch.bool else mask
