"""Which keys each query may see: described once per call, asked tile by tile by every kernel.

Positions: query row ``i`` of batch entry ``b`` sits at key position ``p = offset + i``
(``offset = Lk − Lq``, bottom-right alignment, by default; ``0``, top-left), plus
``shifts[b]`` when each sequence of a padded batch is aligned on its own; key ``j`` sits at
position ``j``. Key ``j`` is visible to query ``i`` of batch entry ``b`` and head ``h`` when all
of these hold:

* the band: ``p − left ≤ j ≤ p + right`` (``causal`` clips ``right`` to ``min(right, 0)``;
  ``None`` leaves a side unbounded);
* lengths: ``key_starts[b] ≤ j < key_lengths[b]`` (left and right padding) and
  ``i < query_lengths[b]``;
* the bool ``mask[b, h, i, j]`` (True = may attend);
* the block mask: ``mask_mod(b, h, i, j)`` in its partial tiles, every key of its full tiles,
  none of its empty ones. A block mask that is exactly a band of indices (a sliding window,
  causal) is taken as that band, so the band kernels serve it.

A float ``bias[b, h, i, j]`` is added to the scores (``−inf`` hides too).

A kernel asks :meth:`Visibility.span` for the keys a block of queries may see,
:meth:`Visibility.tile` whether a tile is empty (skip it), full (no mask) or partial (its mask),
and :meth:`Visibility.at` for the mask and bias at any index grid (the band layout of ``local``).

Shape legend: B batch, H query heads, Lq/Lk query/key length, q/k a tile's rows/keys, E the
broadcast shape of an index grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import statically_known_true

from attnkit.kernels.block_mask import EMPTY, PARTIAL, BlockMask

NEG_INF = float("-inf")  # the score of a key a query may not see


def bottom_right(q_len: int, kv_len: int) -> int:
    """Key position of query 0 when the last query sits at the last key (what a KV cache
    needs; attnkit's default alignment)."""
    return kv_len - q_len


def clip_band(causal: bool, window: tuple[int, int] | None) -> tuple[int | None, int | None]:
    """``(left, right)`` of ``window`` (``None``: unbounded), ``right`` clipped to 0 by causal."""
    left, right = window if window is not None else (None, None)
    if causal:
        right = 0 if right is None else min(right, 0)
    return left, right


def in_band(diff: Tensor, left: int | None, right: int | None) -> Tensor | None:
    """Bool: key-minus-query position ``diff`` lies in ``[−left, right]`` (``None`` if both
    sides are unbounded)."""
    out = None if left is None else diff >= -left
    if right is not None:
        out = diff <= right if out is None else out & (diff <= right)
    return out


@dataclass(frozen=True)
class Tile:
    """What a non-empty tile needs: ``mask`` bool ``(B|1, H|1, q, k)`` and ``bias`` float
    ``(B|1, H|1, q|1, k|1)``, each ``None`` when it hides/adds nothing."""

    mask: Tensor | None = None
    bias: Tensor | None = None

    @property
    def full(self) -> bool:
        return self.mask is None and self.bias is None


class Ranges(NamedTuple):
    shift_min: int
    shift_max: int
    k_min: int  # key lengths, clamped to 0..Lk
    k_max: int
    q_min: int  # query lengths
    q_max: int
    start_min: int  # key starts, clamped to 0..Lk
    start_max: int


def _tighter(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _lengths(t: Tensor | None, default: int) -> tuple[int, int]:
    if t is None:
        return default, default
    lo, hi = t.aminmax()
    return int(lo), int(hi)


@dataclass(eq=False, kw_only=True)
class Visibility:
    """The visibility of one attention call (see the module docstring): ``batch``, ``heads``
    (query heads), ``q_len``, ``kv_len``; the band ``left``/``right`` (already clipped for
    causal; ``None``: unbounded); ``offset``, the key position of query row 0 (default
    bottom-right); ``shifts (B,)`` added to each batch entry's query positions;
    ``key_starts``/``key_lengths``/``query_lengths (B,)``; the bool
    ``mask (B|1, H|1, Lq, Lk)``; the float ``bias (B|1, H|1, Lq|1, Lk|1)``; a
    :class:`BlockMask` for ``(Lq, Lk)``."""

    batch: int
    heads: int
    q_len: int
    kv_len: int
    device: torch.device
    left: int | None = None
    right: int | None = None
    offset: int | None = None  # type: ignore[assignment]  # an int after __post_init__
    shifts: Tensor | None = None
    key_starts: Tensor | None = None
    key_lengths: Tensor | None = None
    query_lengths: Tensor | None = None
    mask: Tensor | None = None
    bias: Tensor | None = None
    block_mask: BlockMask | None = None
    # Filled by `ranges` (not a functools.cached_property: its lock stops torch.compile).
    _ranges: Ranges | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.offset is None:
            self.offset = bottom_right(self.q_len, self.kv_len)
        band = None if self.block_mask is None else self.block_mask.band
        if band is not None and (not self.banded or statically_known_true(self.offset == 0)):
            # The block mask is exactly a band of indices: describe it as the band (query i
            # at key position i), intersected with the call's own.
            self.offset, self.block_mask = 0, None
            self.left = _tighter(self.left, band[0])
            self.right = _tighter(self.right, band[1])

    @property
    def ranges(self) -> Ranges:
        """The per-sequence tensors' smallest and largest values: read once, and only by the
        block kernels' tiling (the dense path of sdpa/reference reads no tensor's values, so
        it traces)."""
        if self._ranges is None:
            keys = None if self.key_lengths is None else self.key_lengths.clamp(0, self.kv_len)
            starts = None if self.key_starts is None else self.key_starts.clamp(0, self.kv_len)
            self._ranges = Ranges(*_lengths(self.shifts, 0), *_lengths(keys, self.kv_len),
                                  *_lengths(self.query_lengths, self.q_len),
                                  *_lengths(starts, 0))
        return self._ranges

    # -- what the call holds ------------------------------------------------------------------

    @property
    def banded(self) -> bool:
        return self.left is not None or self.right is not None

    @property
    def band_hides(self) -> bool:
        """Whether the band may hide a key from a query, told by the sizes alone: a causal
        query sitting at or after the last key (one decoding step) sees every key. With
        symbolic sizes (under ``torch.export``) only what holds for every size counts."""
        if not self.banded:
            return False
        if self.shifts is not None:
            return True
        last = self.offset + self.q_len - 1  # key position of the last query
        sees_first = self.left is None or statically_known_true(last - self.left <= 0)
        sees_last = self.right is None or statically_known_true(
            self.offset + self.right >= self.kv_len - 1
        )
        return not (sees_first and sees_last)

    @property
    def has_mask(self) -> bool:
        """Whether any key may be hidden from a query (anything but a float bias)."""
        return (
            self.band_hides or self.padded or self.query_lengths is not None
            or self.mask is not None or self.block_mask is not None
        )

    @property
    def padded(self) -> bool:
        """Whether key lengths or key starts may hide keys of some batch entries."""
        return self.key_lengths is not None or self.key_starts is not None

    @property
    def uniform(self) -> bool:
        """Whether every batch entry has the same query positions and all query rows are real."""
        return self.shifts is None and self.query_lengths is None

    @property
    def every_query_sees_a_key(self) -> bool:
        """Whether no query row can be empty, told without reading values: nothing but the
        band may hide a key, and each query's own position (which every band keeps: window
        sides are ≥ 0) is a key of ``0..Lk − 1``."""
        return (
            self.uniform and not self.padded and self.mask is None and self.bias is None
            and self.block_mask is None and statically_known_true(self.offset >= 0)
            and statically_known_true(self.offset + self.q_len <= self.kv_len)
        )

    @property
    def top_left_causal(self) -> bool:
        """Exactly ``torch``'s ``is_causal``: keys ``0..i`` for query ``i``, nothing else."""
        return (
            (self.left, self.right) == (None, 0) and statically_known_true(self.offset == 0)
            and self.uniform and not self.padded and self.mask is None
            and self.bias is None and self.block_mask is None
        )

    def dense_shape(self) -> tuple[int, int, int, int] | None:
        """The shape of the dense bool mask and bias this call needs at most (``None``: none)."""
        shape = [1, 1, 1, 1]
        if self.band_hides or self.block_mask is not None:
            shape[2:] = [self.q_len, self.kv_len]
        if self.shifts is not None:
            shape[0] = self.batch
        if self.padded:
            shape[0], shape[3] = self.batch, self.kv_len
        if self.query_lengths is not None:
            shape[0], shape[2] = self.batch, self.q_len
        parts = [t.shape for t in (self.mask, self.bias) if t is not None]
        if self.block_mask is not None:
            parts.append((*self.block_mask.table.shape[:2], 1, 1))
        for part in parts:
            shape = [max(a, int(n)) for a, n in zip(shape, part, strict=True)]
        return None if shape == [1, 1, 1, 1] else (shape[0], shape[1], shape[2], shape[3])

    # -- blocks of queries and tiles -----------------------------------------------------------

    def _positions(self, q0: int, q1: int) -> tuple[int, int]:
        """Lowest and highest key position of the queries ``q0:q1`` over the batch."""
        shifts = self.ranges
        return self.offset + shifts.shift_min + q0, self.offset + shifts.shift_max + q1 - 1

    def span(self, q0: int, q1: int) -> tuple[int, int]:
        """Keys ``[lo, hi)`` that some query of ``q0:q1`` may see (``hi <= lo``: none)."""
        if q0 >= self.ranges.q_max:
            return 0, 0
        first, last = self._positions(q0, q1)
        lo, hi = self.ranges.start_min, self.ranges.k_max
        if self.left is not None:
            lo = max(lo, first - self.left)
        if self.right is not None:
            hi = min(hi, last + self.right + 1)
        if self.block_mask is not None:
            b_lo, b_hi = self.block_mask.span(q0, q1)
            lo, hi = max(lo, b_lo), min(hi, b_hi)
        return lo, max(lo, hi)

    def _band_covers(self, q0: int, q1: int, k0: int, k1: int) -> bool:
        """Whether keys ``k0:k1`` lie in the band of every query of ``q0:q1``. With symbolic
        sizes (under ``torch.export``) only what holds for every size counts: the traced graph
        keeps the mask rather than guard on the length."""
        if not self.banded:
            return True
        first, last = self._positions(q0, q1)
        return (self.left is None or statically_known_true(k0 >= last - self.left)) and (
            self.right is None or statically_known_true(k1 - 1 <= first + self.right)
        )

    def only_band(self, q0: int, q1: int, k0: int, k1: int) -> bool:
        """Whether nothing but the band hides or adds anything in the tile (its keys all real,
        its queries all real, no mask, bias or block mask)."""
        return (
            k0 >= self.ranges.start_max and k1 <= self.ranges.k_min and q1 <= self.ranges.q_min
            and self.shifts is None
            and self.mask is None and self.bias is None and self.block_mask is None
        )

    def tile(self, q0: int, q1: int, k0: int, k1: int) -> Tile | None:
        """``None`` if no query of ``q0:q1`` may see a key of ``k0:k1`` (skip the tile), else
        its :class:`Tile` (full when nothing is hidden or added)."""
        lo, hi = self.span(q0, q1)
        if min(hi, k1) <= max(lo, k0):
            return None
        status = PARTIAL
        if self.block_mask is not None:
            status = self.block_mask.status(q0, q1, k0, k1)
            if status == EMPTY:
                return None
        return self._parts(q0, q1, k0, k1, block_partial=status == PARTIAL)

    def mask_of(self, q0: int, q1: int, k0: int, k1: int) -> Tensor | None:
        """Bool ``(B|1, H|1, q, k)`` of the tile (True = may attend), or ``None`` if nothing
        may hide a key there; unlike :meth:`tile`, an empty tile gives its all-False mask, and
        no tensor's values are read (the dense path of ``sdpa``/``reference`` traces)."""
        status = PARTIAL if self.block_mask is None else self.block_mask.status(q0, q1, k0, k1)
        if status == EMPTY:
            return torch.zeros(1, 1, q1 - q0, k1 - k0, dtype=torch.bool, device=self.device)
        return self._parts(q0, q1, k0, k1, block_partial=status == PARTIAL, exact=False).mask

    def _parts(
        self, q0: int, q1: int, k0: int, k1: int, *, block_partial: bool, exact: bool = True
    ) -> Tile:
        """The tile's mask and bias; ``exact``: skip the lengths where their values show they
        hide nothing in the tile (reading them), else apply them wherever they are given."""
        mask = None
        if exact:
            structured = not (self._band_covers(q0, q1, k0, k1) and k1 <= self.ranges.k_min
                              and q1 <= self.ranges.q_min and k0 >= self.ranges.start_max)
        else:
            structured = not self.uniform or self.padded or not (
                self._band_covers(q0, q1, k0, k1)
            )
        if structured or (block_partial and self.block_mask is not None):
            rows = torch.arange(q0, q1, device=self.device).unsqueeze(-1)  # (q, 1)
            cols = torch.arange(k0, k1, device=self.device)  # (k,)
            if structured:
                mask = self._structure(rows, cols, (q1, k0, k1), exact)
            if block_partial and self.block_mask is not None:
                mask = _and(mask, self.block_mask.allowed(self.batch, self.heads, rows, cols))
        if self.mask is not None:
            mask = _and(mask, self.mask[:, :, q0:q1, k0:k1])
        bias = None
        if self.bias is not None and exact:  # the dense path reads self.bias itself
            b = self.bias
            rows_ = slice(q0, q1) if b.shape[2] > 1 else slice(None)
            bias = b[:, :, rows_, slice(k0, k1) if b.shape[3] > 1 else slice(None)]
        return Tile(mask, bias)

    # -- any index grid -------------------------------------------------------------------------

    def _structure(
        self, rows: Tensor, cols: Tensor, bounds: tuple[int, int, int], exact: bool = True
    ) -> Tensor | None:
        """Band and lengths at query indices ``rows`` and key indices ``cols`` (which may lie
        outside ``0..Lk − 1``: hidden): bool ``(B|1, 1, *E)``, or ``None``. ``bounds`` are
        ``(q_end, k_start, k_end)``: every row is below ``q_end``, every key in
        ``k_start..k_end − 1``."""
        q_end, k_start, k_end = bounds
        extra = max(rows.dim(), cols.dim())
        per_batch = (-1,) + (1,) * extra

        def batched(t: Tensor) -> Tensor:
            return t.to(self.device).view(per_batch)  # (B, 1...)

        out = None
        if self.banded:
            diff = cols - (rows + self.offset)  # (E)
            if self.shifts is not None:
                diff = diff - batched(self.shifts)  # (B, E)
            out = in_band(diff, self.left, self.right)
        if self.key_starts is not None and (not exact or k_start < self.ranges.start_max):
            out = _and(out, cols >= batched(self.key_starts))
        if k_start < 0:
            out = _and(out, cols >= 0)
        if self.key_lengths is not None and (not exact or k_end > self.ranges.k_min):
            out = _and(out, cols < batched(self.key_lengths))
        elif not statically_known_true(k_end <= self.kv_len):
            out = _and(out, cols < self.kv_len)
        if self.query_lengths is not None and (not exact or q_end > self.ranges.q_min):
            out = _and(out, rows < batched(self.query_lengths))
        if out is None:
            return None
        if out.dim() == extra:
            out = out.unsqueeze(0)
        return out.unsqueeze(1)  # (B|1, 1, *E)

    def band_at(self, rows: Tensor, cols: Tensor) -> Tensor | None:
        """The band alone at an index grid (uniform positions): bool ``E`` or ``None``."""
        return in_band(cols - (rows + self.offset), self.left, self.right)

    def at(self, rows: Tensor, cols: Tensor) -> Tile:
        """Mask and bias at query indices ``rows`` and key indices ``cols`` (broadcastable int64
        tensors; keys outside ``0..Lk − 1`` are hidden): ``(B|1, H|1, *E)``."""
        bounds = (int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)
        mask = self._structure(rows, cols, bounds)
        if self.block_mask is not None:
            mask = _and(mask, self.block_mask.allowed(self.batch, self.heads, rows, cols))
        r = rows.clamp(0, self.q_len - 1)
        c = cols.clamp(0, self.kv_len - 1)
        if self.mask is not None:
            mask = _and(mask, self.mask[:, :, r, c])
        bias = None
        if self.bias is not None:
            b = self.bias
            r = r if b.shape[2] > 1 else torch.zeros_like(r)
            bias = b[:, :, r, c if b.shape[3] > 1 else torch.zeros_like(c)]
        return Tile(mask, bias)


def _and(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a & b
