"""Summaries of the attention weights, made tile by tile from exact probabilities.

A :class:`Reduction` is a consumer of :func:`attnkit.kernels.online.probabilities` (or of the
one-pass forward over whole rows, :func:`attnkit.kernels.online.forward` with ``consume``):
it receives each visible tile's exact probabilities ``p (n, q, k)`` of group ``g`` over the
queries ``q0:q1`` and keys ``k0:k1`` of the rows layout, for the ``entries`` of ``B·Hkv``
(all, or one: ``n = 1``), folds them into a buffer of the summary's size, and
:meth:`Reduction.result` hands the summary back. A tile may come with ``scale (n, q)``, a
multiplier per row (the probabilities are then ``p · scale``: rows normalised without their
attention sink, times ``1 − p_sink``), folded into the reduction where that is cheaper than
scaling the tile. Tiles nobody can see are never visited: their keys weigh 0.

* ``"key_totals"`` (:class:`KeyTotals`): ``(B, Hq, Lk)``, ``Σ_i P_ij``, float32 at least;
* ``"heads_mean"`` (:class:`HeadsMean`): ``(B, Lq, Lk)``, the mean over query heads;
* :class:`TopK` (:class:`TopKeys`): ``(values, indices)``, each ``(B, Hq, Lq, k)``, each
  query's ``k`` largest weights (descending) and their distinct key indices; zero weights
  (hidden keys) come in any order.

:func:`reduce` makes the same summaries from a full weights tensor (the ``reference`` kernel).

Shape legend: B batch, Hq/Hkv query/key-value heads, G = Hq/Hkv, n = B·Hkv, Lq/Lk lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from attnkit.kernels.plan import Shapes
    from attnkit.kernels.tiling import Box


@dataclass(frozen=True)
class TopK:
    """Ask :func:`attnkit.attention` for each query's ``k`` largest weights and their key
    indices, ``(values, indices)`` of shape ``(B, Hq, Lq, k)``.

    Raises:
        TypeError/ValueError: ``k`` not a positive integer.
    """

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise TypeError(f"TopK: k must be a positive integer, got {type(self.k).__name__}")
        if self.k < 1:
            raise ValueError(f"TopK: k must be a positive integer, got {self.k}")


Summary = str | TopK  # "heads_mean", "key_totals" or a TopK
Result = Tensor | tuple[Tensor, Tensor]


def reduce(weights: Tensor, summary: Summary) -> Result:
    """The summary of full weights ``(B, Hq, Lq, Lk)`` (see the module docstring), detached."""
    weights = weights.detach()
    if isinstance(summary, TopK):
        top = torch.topk(weights, summary.k, dim=-1)
        return top.values, top.indices  # (B, Hq, Lq, k) each
    precise = torch.promote_types(weights.dtype, torch.float32)
    if summary == "heads_mean":
        return weights.mean(dim=1, dtype=precise).to(weights.dtype)  # (B, Lq, Lk)
    return weights.sum(dim=2, dtype=precise)  # (B, Hq, Lk)


class Reduction(Protocol):
    """A consumer ``(p (n, q, k), g, (q0, q1, k0, k1), entries[, scale (n, q)]) -> None``
    that builds one summary (``p`` may be overwritten)."""

    def __call__(
        self, p: Tensor, g: int, box: Box, entries: slice, scale: Tensor | None = None
    ) -> None: ...

    def result(self) -> Result: ...


def reduction(summary: Summary, shapes: Shapes, dtype: torch.dtype, compute: torch.dtype,
              device: torch.device) -> Reduction:
    """The :class:`Reduction` of ``summary`` for a call of ``shapes`` whose inputs are
    ``dtype`` and whose tiles are ``compute``."""
    if isinstance(summary, TopK):
        return TopKeys(shapes, summary.k, dtype, compute, device)
    if summary == "heads_mean":
        return HeadsMean(shapes, dtype, compute, device)
    return KeyTotals(shapes, torch.promote_types(dtype, torch.float32), device)


class KeyTotals:
    """``Σ_i P_ij`` per head: ``(n, G, Lk)`` accumulated, returned as ``(B, Hq, Lk)``."""

    def __init__(self, shapes: Shapes, dtype: torch.dtype, device: torch.device) -> None:
        self.shapes = shapes
        self.totals = torch.zeros(shapes.batch * shapes.kv_heads, shapes.group, shapes.kv_len,
                                  dtype=dtype, device=device)  # (n, G, Lk)

    def __call__(
        self, p: Tensor, g: int, box: Box, entries: slice, scale: Tensor | None = None
    ) -> None:
        target = self.totals[entries, g, box[2] : box[3]].unsqueeze(1)  # (n, 1, k)
        # Σ over the rows as a product (not a sum), whose left side carries the rows' scale
        rows = p.new_ones(p.shape[0], p.shape[1]) if scale is None else scale  # (n, q)
        target.baddbmm_(rows.unsqueeze(1).to(target.dtype), p.to(target.dtype))  # (n, 1, q)

    def result(self) -> Tensor:
        s = self.shapes
        return self.totals.view(s.batch, s.q_heads, s.kv_len)  # (B, Hq, Lk): h = hkv·G + g


class HeadsMean:
    """The mean over query heads, ``(B, Lq, Lk)``, accumulated in the tiles' dtype.

    Each block of queries is written by its first tile (zeroed first when that tile covers
    part of the keys), not zero-filled beforehand; blocks no tile visits are zeroed by
    :meth:`result`. Tiles come block after block (:meth:`Tiling.tiles`)."""

    def __init__(self, shapes: Shapes, dtype: torch.dtype, compute: torch.dtype,
                 device: torch.device) -> None:
        self.shapes, self.dtype = shapes, dtype
        self.sums = torch.empty(shapes.batch, shapes.q_len, shapes.kv_len, dtype=compute,
                                device=device)  # (B, Lq, Lk)
        self.blocks: list[tuple[int, int]] = []  # blocks of queries begun, in order

    def __call__(
        self, p: Tensor, g: int, box: Box, entries: slice, scale: Tensor | None = None
    ) -> None:
        q0, q1, k0, k1 = box
        s = self.shapes
        if scale is not None:
            p.mul_(scale.unsqueeze(-1))  # (n, q, k)
        if not self.blocks or self.blocks[-1] != (q0, q1):  # the block's first tile
            self.blocks.append((q0, q1))
            if k1 - k0 < s.kv_len:  # part of the keys (a window, or a tile of the second pass)
                self.sums[:, q0:q1].zero_()
        if entries.start is not None:  # one head's tile of whole rows: its share, added
            b, hkv = divmod(entries.start, s.kv_heads)
            target = self.sums[b, q0:q1, k0:k1]  # (q, k); the first head of b writes it
            if g == 0 and hkv == 0:
                torch.mul(p[0], 1.0 / s.q_heads, out=target)
            else:
                target.add_(p[0], alpha=1.0 / s.q_heads)
            return
        heads = p.view(s.batch, s.kv_heads, -1)  # (B, Hkv, q·k)
        share = p.new_full((s.batch, 1, s.kv_heads), 1.0 / s.q_heads)  # (B, 1, Hkv)
        target = self.sums[:, q0:q1, k0:k1]  # (B, q, k): the mean is a product, cheaper than
        if k1 - k0 < s.kv_len:  # a mean over dim 1; a tile of the second pass (part of a row)
            target.add_(torch.bmm(share, heads).view(target.shape))
            return
        beta = 0.0 if g == 0 else 1.0  # whole rows of every entry: group 0 writes them
        target.view(s.batch, 1, -1).baddbmm_(share, heads, beta=beta)  # (B, 1, q·k), in place

    def result(self) -> Tensor:
        done = 0
        for q0, q1 in self.blocks:  # the rows no tile visited (they see no key) weigh 0
            self.sums[:, done:q0].zero_()
            done = q1
        self.sums[:, done:].zero_()
        return self.sums.to(self.dtype)  # (B, Lq, Lk)


class TopKeys:
    """Each row's ``k`` largest probabilities so far, ``(n, G·Lq, k)``, merged tile by tile.

    Slots start at ``−1`` (below every probability); after the last tile a row that saw fewer
    than ``k`` keys fills its remaining slots with weight 0 at keys it has not taken, so the
    indices of a row are always distinct.
    """

    def __init__(self, shapes: Shapes, k: int, dtype: torch.dtype, compute: torch.dtype,
                 device: torch.device) -> None:
        self.shapes, self.k, self.dtype = shapes, k, dtype
        rows = shapes.group * shapes.q_len
        n = shapes.batch * shapes.kv_heads
        self.values = torch.full((n, rows, k), -1.0, dtype=compute, device=device)  # (n, G·Lq, k)
        self.indices = torch.zeros(n, rows, k, dtype=torch.long, device=device)  # (n, G·Lq, k)

    def __call__(
        self, p: Tensor, g: int, box: Box, entries: slice, scale: Tensor | None = None
    ) -> None:
        q0, q1, k0, k1 = box
        r0, r1 = g * self.shapes.q_len + q0, g * self.shapes.q_len + q1
        tile_values, tile_indices = _top(p, min(self.k, k1 - k0))  # (n, q, ≤k) each
        if scale is not None:  # a positive factor per row keeps the order (0: a row of zeros)
            tile_values.mul_(scale.unsqueeze(-1))
        values = torch.cat([self.values[entries, r0:r1], tile_values], dim=-1)  # (n, q, ≤2k)
        indices = torch.cat([self.indices[entries, r0:r1], tile_indices.add_(k0)], dim=-1)
        best = values.topk(self.k, dim=-1)  # (n, q, k) each
        self.values[entries, r0:r1] = best.values
        self.indices[entries, r0:r1] = indices.gather(-1, best.indices)

    def result(self) -> tuple[Tensor, Tensor]:
        values, indices = self.values, self.indices
        free = values < 0  # (n, G·Lq, k): slots no visible key filled (they are the last ones)
        if bool(free.any()):
            rows = free.any(dim=-1)  # (n, G·Lq)
            indices[rows] = _fill_free(indices[rows], free[rows], self.shapes.kv_len)
            values.clamp_(min=0.0)
        s = self.shapes
        shape = (s.batch, s.q_heads, s.q_len, self.k)
        return values.to(self.dtype).view(shape), indices.view(shape)  # (B, Hq, Lq, k) each


_GROUP = 8  # keys per group in _top (4 and 16 measured slower)


def _top(p: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``torch.topk(p, k)`` over the last dim, several times cheaper for wide rows.

    The keys are cut into groups of ``_GROUP`` (key ``c`` of group ``c mod G``, a strided view
    whose maxima one vectorised reduction gives); every one of a row's top ``k`` keys lies in
    one of the ``k`` groups with the largest maxima (else ``k`` groups would each hold a larger
    key), so ``topk`` runs on those ``_GROUP·k`` candidates (and the last ``width mod _GROUP``
    keys) instead of the whole row. Ties may pick other keys of equal weight.
    """
    width = p.shape[-1]
    groups = width // _GROUP
    if groups < 4 * k:
        top = p.topk(k, dim=-1)
        return top.values, top.indices
    main = p[..., : groups * _GROUP].unflatten(-1, (_GROUP, groups))  # (..., GROUP, G)
    best = main.amax(dim=-2).topk(k, dim=-1).indices  # (..., k): the groups
    starts = torch.arange(0, groups * _GROUP, groups, device=p.device).unsqueeze(-1)  # (GROUP, 1)
    cols = (best.unsqueeze(-2) + starts).flatten(-2)  # (..., GROUP·k): their keys
    tail = torch.arange(groups * _GROUP, width, device=p.device)  # (width mod GROUP,)
    cols = torch.cat([cols, tail.expand(*cols.shape[:-1], -1)], dim=-1)
    top = p.gather(-1, cols).topk(k, dim=-1)
    return top.values, cols.gather(-1, top.indices)


def _fill_free(indices: Tensor, free: Tensor, kv_len: int) -> Tensor:
    """``indices (r, k)`` with each row's ``free`` slots (its last ones) given the keys of
    ``0..kv_len − 1`` it has not taken, in order (``kv_len ≥ k``, so there are enough)."""
    r, k = indices.shape
    taken = torch.zeros(r, kv_len, dtype=torch.int32, device=indices.device)  # (r, Lk)
    taken.scatter_add_(1, indices, (~free).to(torch.int32))
    spare = torch.argsort(taken.clamp_(max=1), dim=1, stable=True)[:, :k]  # untaken keys first
    first_free = k - free.sum(dim=1, keepdim=True)  # (r, 1)
    col = (torch.arange(k, device=indices.device) - first_free).clamp_(min=0)  # (r, k)
    return torch.where(free, spare.gather(1, col), indices)
