"""Attention weights kept compactly, for long inputs: each query's top-k keys and the mass of
the rest.

The full weights of one layer are ``H × Lq × Lk`` numbers (192 MB in float32 for 12 heads at
2,000 tokens); most of a softmax row's mass sits on a few keys. :class:`TopK` keeps, per head
and query, the ``k`` largest weights with their key indices, and the remaining mass
``1 − Σ top-k`` (0 for a query that sees no key), which says how much the kept keys leave out.
The HTML viewer (:func:`attnkit.explain.write_viewer`) shows them; :func:`top_k` used as the
``transform`` of :func:`attnkit.explain.record` drops each layer's full weights as soon as it
has run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# The viewer stores an entry as a 16-bit key index and a 16-bit weight: 4 bytes.
ENTRY_BYTES = 4


@dataclass(frozen=True)
class TopK:
    """The ``k`` largest weights of each query and head, largest first.

    ``values (H, Lq, k)`` float32, ``indices (H, Lq, k)`` int64 key positions, ``rest (H, Lq)``
    float32 (the mass on the other keys), ``kv_len`` the number of keys ``Lk``.
    """

    values: Tensor
    indices: Tensor
    rest: Tensor
    kv_len: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, Lq, Lk)``: the shape of the weights this stands for."""
        heads, queries, _ = self.values.shape
        return heads, queries, self.kv_len

    @property
    def k(self) -> int:
        return int(self.values.shape[-1])

    def first(self, k: int) -> TopK:
        """Only the ``k`` largest of each row; the mass of the others joins ``rest``."""
        if k >= self.k:
            return self
        rest = self.rest + self.values[..., k:].sum(dim=-1)  # (H, Lq)
        return TopK(
            self.values[..., :k].contiguous(), self.indices[..., :k].contiguous(), rest,
            self.kv_len,
        )


def top_k(weights: Tensor, k: int, *, example: int = 0) -> TopK:
    """The top-``k`` form of ``weights (H, Lq, Lk)`` or ``(B, H, Lq, Lk)`` (batch item
    ``example``); ``k`` is capped at ``Lk``.

    Raises:
        TypeError: ``weights`` is not a floating-point tensor.
        ValueError: wrong rank, ``k < 1``, or ``example`` out of range.
    """
    if not isinstance(weights, Tensor) or not weights.is_floating_point():
        raise TypeError(f"weights must be a floating-point tensor, got {type(weights).__name__}")
    if weights.dim() == 4:
        if not -weights.shape[0] <= example < weights.shape[0]:
            raise ValueError(f"example={example} out of range for batch {weights.shape[0]}")
        weights = weights[example]  # (H, Lq, Lk)
    if weights.dim() != 3:
        raise ValueError(
            f"weights must be (H, Lq, Lk) or (B, H, Lq, Lk), got {tuple(weights.shape)}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int ≥ 1, got {k!r}")
    weights = weights.detach().float()
    values, indices = weights.topk(min(k, weights.shape[-1]), dim=-1)  # (H, Lq, k)
    total = weights.sum(dim=-1)  # (H, Lq): 1, or 0 for a query with no key
    rest = (total - values.sum(dim=-1)).clamp_min(0.0)  # (H, Lq)
    return TopK(values.contiguous(), indices.contiguous(), rest.contiguous(), weights.shape[-1])


def concat_queries(parts: Sequence[TopK], key_offsets: Sequence[int], kv_len: int) -> TopK:
    """Join the top-k of consecutive blocks of queries (chunks of a long input, each attending
    to its own keys): part ``i``'s key indices are shifted by ``key_offsets[i]`` into the
    ``kv_len`` keys of the whole input. A part with a smaller ``k`` (a short last chunk) is
    padded with zero weights.

    Raises:
        ValueError: no parts, a length mismatch, or parts that differ in heads.
    """
    if not parts or len(parts) != len(key_offsets):
        raise ValueError(
            f"need one key offset per part, got {len(parts)} parts, {len(key_offsets)} offsets"
        )
    heads = {p.values.shape[0] for p in parts}
    if len(heads) != 1:
        raise ValueError(f"parts differ in their number of heads: {sorted(heads)}")
    k = max(p.k for p in parts)

    def widened(t: Tensor) -> Tensor:
        return torch.nn.functional.pad(t, (0, k - t.shape[-1]))  # (H, Lq, k)

    return TopK(
        torch.cat([widened(p.values) for p in parts], dim=1),  # (H, ΣLq, k)
        torch.cat(
            [widened(p.indices + o) for p, o in zip(parts, key_offsets, strict=True)], dim=1
        ),
        torch.cat([p.rest for p in parts], dim=1),  # (H, ΣLq)
        kv_len,
    )


def choose_k(rows: int, budget_bytes: int, *, largest: int = 32) -> int:
    """The largest ``k ≤ largest`` whose ``rows × k`` entries fit ``budget_bytes`` (at least 1):
    ``rows`` is Σ over layers of ``H × Lq``."""
    return max(1, min(largest, budget_bytes // max(1, rows * ENTRY_BYTES)))
