"""How a block kernel cuts the rows layout into tiles, and the tiles' dropout.

* :class:`Tiling`: blocks of ``qb`` queries by ``kb`` keys over what the
  :class:`~attnkit.kernels.visibility.Visibility` leaves visible (empty tiles skipped, a mask
  only for tiles a constraint cuts through), per group of query heads and, for large tiles
  of whole rows, per entry of ``B·Hkv``; :func:`masked` and :func:`scored` walk them.
* :class:`TileScores`: how a kernel makes a tile's scores (dot products, additive, a
  ``score_mod``: :mod:`~attnkit.kernels.tile_scores`); :func:`fusable` asks whether they do
  whole tiles of softmax attention themselves (PyTorch's fused CPU kernel).
* The tile sizes chosen for whole rows (:func:`whole_rows`) and for fused tiles
  (:func:`fused_tiling`).
* :class:`BlockDropout`: a keep-mask per tile, regenerated from a seed and the tile's key.

The online softmax over these tiles is :mod:`~attnkit.kernels.online`. Rows layout and shape
legend as there: ``(B·Hkv, G·L, X)``, n = B·Hkv, q/k a tile's rows/keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from attnkit.kernels.plan import AttentionPlan
from attnkit.kernels.visibility import NEG_INF, Tile, Visibility


class BlockDropout:
    """Dropout whose keep-mask of each tile is regenerated from ``(seed, tile key)``, so the
    backward pass sees exactly the forward's mask without storing it.

    The seed is drawn from PyTorch's default generator, so ``torch.manual_seed`` makes a run
    reproducible. :meth:`keep` returns the float multiplier (0 or ``1/(1-p)``).
    """

    _MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)

    def __init__(self, p: float, device: torch.device, seed: int | None = None) -> None:
        self.p = p
        self.device = device
        self.seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else seed

    def keep(self, key: tuple[int, int, int], shape: Sequence[int], dtype: torch.dtype) -> Tensor:
        mixed = self.seed
        for part, mix in zip(key, self._MIX, strict=True):
            mixed = (mixed ^ ((part + 1) * mix)) % (2**63)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(mixed)
        uniform = torch.rand(shape, generator=gen, device=self.device, dtype=dtype)
        return (uniform >= self.p).to(dtype).mul_(1.0 / (1.0 - self.p))


def dropout_for(plan: AttentionPlan) -> BlockDropout | None:
    """The plan's dropout (its ``dropout_seed``, or a fresh one), or ``None`` without."""
    if plan.dropout_p <= 0:
        return None
    return BlockDropout(plan.dropout_p, plan.device, plan.dropout_seed)


Box = tuple[int, int, int, int]  # queries q0:q1, keys k0:k1
ALL = slice(None)  # every entry of B·Hkv in one tile


class TileScores(Protocol):
    def scores(self, r0: int, r1: int, k0: int, k1: int, add: Tensor | None = None,
               entries: slice = ALL) -> Tensor:
        """A fresh ``(n, r1-r0, k1-k0)`` tensor of scores of the ``entries`` of ``B·Hkv``
        (``n`` of them) plus ``add`` (the tile's mask and bias as one additive term,
        :meth:`Tiling.additive`), if given."""
        ...

    def backward(self, ds: Tensor, r0: int, r1: int, k0: int, k1: int) -> None:
        """Accumulate the gradient of the tile's score inputs from ``ds`` (consumed)."""
        ...


@dataclass
class Tiling:
    """How a kernel cuts the rows layout: ``qb`` queries by ``kb`` keys, over the queries
    ``q_range`` and keys ``k_range`` (default all) that ``vis`` leaves visible; consecutive
    blocks of queries that see the same keys are taken together while a tile's scores stay
    within ``merge`` elements (fewer, larger products: the documents of a packed batch).
    With ``per_entry`` a tile holds one entry of ``B·Hkv`` (:func:`whole_rows`), not all."""

    vis: Visibility
    kv_heads: int
    qb: int
    kb: int
    dtype: torch.dtype
    dropout: BlockDropout | None = None
    q_range: tuple[int, int] | None = None
    k_range: tuple[int, int] | None = None
    merge: int = 0
    per_entry: bool = False

    @property
    def group(self) -> int:
        return self.vis.heads // self.kv_heads

    @property
    def elements(self) -> int:
        """The most scores one tile holds: the size of a work buffer."""
        n = 1 if self.per_entry else self.vis.batch * self.kv_heads
        return max(n * self.qb * self.kb, self.merge)

    def entries(self) -> list[slice]:
        """The entries of ``B·Hkv`` of each tile: all at once, or one by one (``per_entry``)."""
        if not self.per_entry:
            return [ALL]
        return [slice(e, e + 1) for e in range(self.vis.batch * self.kv_heads)]

    def tiles(self) -> Iterator[tuple[int, int, list[tuple[int, int, Tile]]]]:
        """``(q0, q1, [(k0, k1, tile), ...])`` per block of queries; empty tiles left out."""
        vis = self.vis
        q_lo, q_hi = self.q_range or (0, vis.q_len)
        k_lo, k_hi = self.k_range or (0, vis.kv_len)

        def span(q0: int, q1: int) -> tuple[int, int]:
            lo, hi = vis.span(q0, q1)
            return max(lo, k_lo), min(hi, k_hi)

        q1 = q_lo
        while q1 < q_hi:
            q0, q1 = q1, min(q1 + self.qb, q_hi)
            lo, hi = span(q0, q1)
            n = vis.batch * self.kv_heads
            while q1 < q_hi and (q1 - q0 + self.qb) * (hi - lo) * n <= self.merge:
                if span(q1, min(q1 + self.qb, q_hi)) != (lo, hi):
                    break
                q1 = min(q1 + self.qb, q_hi)
            row = []
            for k0 in range(lo, hi, self.kb):
                k1 = min(k0 + self.kb, hi)
                tile = vis.tile(q0, q1, k0, k1)
                if tile is not None:
                    row.append((k0, k1, tile))
            if row:
                yield q0, q1, row

    def piece(self, t: Tensor, g: int, entry: int | None = None) -> Tensor:
        """The part of a tile's mask or bias ``t (B|1, Hq|1, q|1, k|1)`` for group ``g``:
        ``(B|1, Hkv|1, q|1, k|1)``, or ``(q|1, k|1)`` for one entry of ``B·Hkv``."""
        hkv = self.kv_heads
        if t.shape[1] > 1:
            t = t.view(t.shape[0], hkv, self.group, *t.shape[2:])[:, :, g]  # (B|1, Hkv, ...)
        if entry is None:
            return t
        b, h = divmod(entry, hkv)
        return t[b if t.shape[0] > 1 else 0, h if t.shape[1] > 1 else 0]  # (q|1, k|1)

    def additive(self, tile: Tile, g: int, dtype: torch.dtype, entry: int | None = None) -> Tensor:
        """The tile's bias, and ``−inf`` where its mask hides a key, as one term to add to the
        scores of group ``g``: ``(n|1, q|1, k|1)`` for every entry of ``B·Hkv`` (or ``(1, q|1,
        k|1)`` for one ``entry``). Adding it is cheaper than filling a mask over every head."""
        add = torch.zeros((), dtype=dtype, device=self.vis.device)
        if tile.bias is not None:
            add = self.piece(tile.bias, g, entry).to(dtype)
        if tile.mask is not None:
            add = torch.where(self.piece(tile.mask, g, entry), add, NEG_INF)
        if entry is not None or add.shape[:2] == (1, 1):
            return add.reshape(1, *add.shape[-2:])  # (1, q|1, k|1)
        full = (self.vis.batch, self.kv_heads, *add.shape[2:])
        return add.expand(full).reshape(-1, *add.shape[2:])  # (B·Hkv, q|1, k|1)

    def add_bias_grad(
        self, dbias: Tensor, ds: Tensor, g: int, box: Box, entry: int | None = None,
    ) -> None:
        """Accumulate the score gradient ``ds (n, q, k)`` of one tile into ``dbias``."""
        q0, q1, k0, k1 = box
        rows = slice(q0, q1) if dbias.shape[2] != 1 else slice(None)
        cols = slice(k0, k1) if dbias.shape[3] != 1 else slice(None)
        target = self.piece(dbias[:, :, rows, cols], g, entry)
        grad = ds.view(-1, self.kv_heads, *ds.shape[1:]) if entry is None else ds[0]
        dims = tuple(i for i, n in enumerate(target.shape) if n == 1 and grad.shape[i] != 1)
        target.add_(grad.sum(dim=dims, keepdim=True) if dims else grad)

    def rows(self, g: int, q0: int, q1: int) -> tuple[int, int]:
        return g * self.vis.q_len + q0, g * self.vis.q_len + q1


def masked(tiling: Tiling) -> Iterator[tuple[Box, int, int, slice, Tile, Tensor | None]]:
    """``(box, i, g, entries, tile, add)`` for every visible tile, group and entries of
    ``B·Hkv`` (:meth:`Tiling.entries`): ``i`` the tile's place in its row of tiles (``-1``:
    alone in it), ``add`` its mask and bias as one additive term (:meth:`Tiling.additive`;
    ``None`` for a full tile)."""
    for q0, q1, row in tiling.tiles():
        for i, (k0, k1, tile) in enumerate(row):
            for g in range(tiling.group):
                for es in tiling.entries():
                    entry = None if es == ALL else es.start
                    add = None if tile.full else tiling.additive(tile, g, tiling.dtype, entry)
                    yield (q0, q1, k0, k1), i if len(row) > 1 else -1, g, es, tile, add


def scored(
    sb: TileScores, tiling: Tiling,
) -> Iterator[tuple[Box, int, int, slice, Tile, Tensor]]:
    """``(box, i, g, entries, tile, s)`` as :func:`masked` gives them, with ``s (n, q, k)``
    the tile's masked scores (valid until the next item) in place of ``add``."""
    for (q0, q1, k0, k1), i, g, es, tile, add in masked(tiling):
        s = sb.scores(*tiling.rows(g, q0, q1), k0, k1, add, es)  # (n, q, k)
        yield (q0, q1, k0, k1), i, g, es, tile, s


Consumer = Callable[[Tensor, int, Box, slice], None]  # (p, g, box, entries)


FUSED_ELEMENTS = 1 << 23  # scores in one fused tile: the kernel holds only its own blocks


def fused_tiling(tiling: Tiling) -> Tiling:
    """``tiling`` for :func:`fusable` scores: blocks of queries that see the same keys are
    taken together up to ``FUSED_ELEMENTS`` scores (no tile of scores is made; only the mask
    of a partial tile is)."""
    return replace(tiling, merge=FUSED_ELEMENTS) if tiling.merge else tiling


def fusable(sb: TileScores, vr: Tensor) -> bool:
    """Whether ``sb`` does whole tiles of plain softmax attention itself, with values ``vr``:
    ``fused(r0, r1, k0, k1, add, vr) -> (out_b (n, q, Dv), lse_b (n, q))`` (the tile on its
    own, as :func:`attend_` would leave it; ``−inf`` for rows that see nothing) and
    ``fused_grads`` (:func:`tile_grads` and the score gradients of a tile, from the final
    ``out`` and ``lse``). :class:`~attnkit.kernels.tile_scores.DotScores` can, on CPU, by
    PyTorch's FlashAttention kernel; tiles with dropout, weights to hand on or a bias to
    differentiate go through :func:`attend_`/:func:`tile_grads`."""
    fuses = getattr(sb, "fuses", None)
    return fuses is not None and fuses(vr)


WHOLE_ROWS_ELEMENTS = 1 << 22  # scores in one tile of whole rows (16 MiB in float32)
PER_ENTRY_ELEMENTS = 1 << 20  # an entry's queries × keys from which a tile holds one entry


def whole_rows(tiling: Tiling) -> Tiling | None:
    """``tiling`` with every key in one tile, so each block of queries is one tile of whole
    rows: as many queries as keep a tile within ``WHOLE_ROWS_ELEMENTS`` scores (``None`` when
    not one row of every batch entry fits).

    Where one entry's queries × keys reach ``PER_ENTRY_ELEMENTS`` (and no dropout keep-mask
    spans the entries), a tile is one entry of ``B·Hkv`` (``per_entry``): a product with many
    rows of one head is faster than a batch of short ones (at ``N = 4096``, 8 heads, one
    thread: 1,024 rows of one head take ~15 % less time than 128 rows of eight)."""
    vis = tiling.vis
    width = max(1, vis.kv_len)
    per_entry = tiling.dropout is None and vis.q_len * width >= PER_ENTRY_ELEMENTS
    qb = WHOLE_ROWS_ELEMENTS // ((1 if per_entry else vis.batch * tiling.kv_heads) * width)
    if qb < 1:
        return None
    return replace(tiling, qb=min(qb, max(1, vis.q_len)), kb=width, merge=0, per_entry=per_entry)
