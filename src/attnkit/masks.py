"""Masks: which keys each query may attend to. **True = may attend**, everywhere in attnkit.

Each kind exists twice: as a dense bool tensor (for any kernel, and for users), and as part of
the structured :class:`MaskStructure` (causal, window, key lengths) that a kernel can exploit
without materialising ``(Lq, Lk)``, for example by skipping key blocks no query can see.

Positions: query ``i`` of ``Lq`` sits at key position ``Lk - Lq + i`` (bottom-right
alignment, what a KV cache needs), unless explicit ``query_positions`` are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.kernels.plan import band_covers


def query_positions(q_len: int, kv_len: int, device: torch.device | str | None = None) -> Tensor:
    """Key position of each query under bottom-right alignment: ``(Lq,)`` int64."""
    return torch.arange(kv_len - q_len, kv_len, device=device)


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
    ok = torch.ones(p.shape[0], kv_len, dtype=torch.bool, device=p.device)  # (Lq, Lk)
    if left is not None:
        ok &= j >= p - left
    if right is not None:
        ok &= j <= p + right
    return ok


def around(centers: Tensor, kv_len: int, half_width: float) -> Tensor:
    """Bool ``(..., Lk)``: keys within ``half_width`` of real-valued ``centers (...)``.

    The window of Luong's local-p: ``|j − p_t| ≤ D``.
    """
    j = torch.arange(kv_len, device=centers.device, dtype=centers.dtype)
    return (j - centers.unsqueeze(-1)).abs() <= half_width


def key_padding(lengths: Tensor, kv_len: int) -> Tensor:
    """``(B, 1, 1, Lk)`` bool from key lengths ``(B,)``: key ``j`` is real when ``j < length``."""
    j = torch.arange(kv_len, device=lengths.device)
    return (j < lengths.unsqueeze(-1)).reshape(lengths.shape[0], 1, 1, kv_len)  # (B, 1, 1, Lk)


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


@dataclass(frozen=True, eq=False)
class MaskStructure:
    """Causal, window and key-padding constraints, described rather than materialised.

    ``key_lengths (B,)`` int64 or ``None``; ``window (left, right)`` or ``None``.
    """

    causal: bool = False
    window: tuple[int, int] | None = None
    key_lengths: Tensor | None = None

    def band(self) -> tuple[int | None, int | None]:
        """``(left, right)`` of the combined causal/window band; ``None`` = unbounded."""
        left, right = (None, None) if self.window is None else self.window
        if self.causal:
            right = 0 if right is None else min(right, 0)
        return left, right

    def block(
        self, q_len: int, kv_len: int, q0: int, q1: int, k0: int, k1: int, device: torch.device
    ) -> Tensor | None:
        """Bool ``(B|1, 1, q1-q0, k1-k0)`` for queries ``q0:q1`` and keys ``k0:k1``, or ``None``."""
        left, right = self.band()
        out = None
        first, last = kv_len - q_len + q0, kv_len - q_len + q1 - 1  # query positions
        if q1 > q0 and k1 > k0 and band_covers(first, last, k0, k1, left, right):
            left = right = None  # every key of the block is in every query's band
        if left is not None or right is not None:
            p = torch.arange(kv_len - q_len + q0, kv_len - q_len + q1, device=device)
            j = torch.arange(k0, k1, device=device)
            offset = j.unsqueeze(0) - p.unsqueeze(1)  # (q1-q0, k1-k0): key minus query position
            out = torch.ones(offset.shape, dtype=torch.bool, device=device)
            if left is not None:
                out &= offset >= -left
            if right is not None:
                out &= offset <= right
            out = out.reshape(1, 1, q1 - q0, k1 - k0)  # (1, 1, q, k)
        if self.key_lengths is not None:
            j = torch.arange(k0, k1, device=device)
            real = j < self.key_lengths.to(device).unsqueeze(-1)  # (B, k)
            out = combine(out, real.unsqueeze(1).unsqueeze(1))  # (B, 1, 1, k)
        return out

    def dense(self, q_len: int, kv_len: int, device: torch.device) -> Tensor | None:
        """The whole mask as bool ``(B|1, 1, Lq, Lk)``, or ``None`` if nothing is hidden."""
        return self.block(q_len, kv_len, 0, q_len, 0, kv_len, device)
