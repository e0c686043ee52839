"""A ``mask_mod`` with its block table: which tiles it hides entirely, which it shows in full.

FlexAttention's idea (He et al. 2024; ``torch.nn.attention.flex_attention.BlockMask``): the
queries × keys grid is cut into blocks of ``(Q_BLOCK, K_BLOCK)``, and each block is marked
**empty** (``mask_mod`` is False everywhere: never computed), **full** (True everywhere: no
mask needed) or **partial** (``mask_mod`` is evaluated on the tile). The table is built once per
mask (:func:`attnkit.create_block_mask`, which also converts PyTorch's ``BlockMask``) and
reused by every call and layer with that mask.

The table is per ``(B|1, H|1)``; kernels process every batch entry and head of a tile at once,
so a tile is empty only if it is empty for all of them, and full only if full for all.
``mask_mod`` is called with broadcastable int64 index tensors ``b (B, 1, 1, 1)``,
``h (1, H, 1, 1)``, ``q_idx``, ``kv_idx``; its result must broadcast to their shape.

Shape legend: B batch, H query heads, nq/nk query/key blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
EMPTY, PARTIAL, FULL = 0, 1, 2


def index_grid(batch: int, heads: int, rows: Tensor, cols: Tensor) -> tuple[Tensor, ...]:
    """``(b, h, q_idx, kv_idx)`` index tensors for ``mask_mod``/``score_mod``, broadcasting to
    ``(B, H, *E)`` where ``E`` is the broadcast shape of ``rows`` and ``cols``."""
    extra = max(rows.dim(), cols.dim())
    ones = (1,) * extra
    device = rows.device
    b = torch.arange(batch, device=device).view(batch, 1, *ones)  # (B, 1, 1...)
    h = torch.arange(heads, device=device).view(1, heads, *ones)  # (1, H, 1...)
    pad = (1,) * 2
    return b, h, rows.view(*pad, *rows.shape), cols.view(*pad, *cols.shape)


class BlockMask:
    """``mask_mod`` plus its ``(B|1, H|1, nq, nk)`` table of :data:`EMPTY`/:data:`PARTIAL`/
    :data:`FULL` blocks of ``block_size = (Q_BLOCK, K_BLOCK)``, for ``seq_lengths = (Lq, Lk)``.

    The table must describe ``mask_mod`` (as :func:`attnkit.create_block_mask`'s does): empty
    blocks are skipped and full blocks see every key without evaluating ``mask_mod``. ``band``
    is ``(left, right)`` when ``mask_mod`` is exactly the band ``−left ≤ kv_idx − q_idx ≤
    right`` (a sliding window, causal, ...; ``None`` for an unbounded side), which the
    :class:`~attnkit.kernels.visibility.Visibility` then takes instead of the table.
    """

    def __init__(
        self,
        mask_mod: MaskMod,
        table: Tensor,
        block_size: tuple[int, int],
        seq_lengths: tuple[int, int],
        band: tuple[int | None, int | None] | None = None,
    ) -> None:
        self.mask_mod, self.table, self.band = mask_mod, table, band
        self.block_size, self.seq_lengths = block_size, seq_lengths
        # Aggregated over (B, H), as Python lists: each lookup of a tile is a few additions.
        flat = table.reshape(-1, *table.shape[-2:]).cpu()  # (B·H, nq, nk)
        seen = (flat != EMPTY).any(dim=0)  # (nq, nk)
        self._seen = _prefix(seen)
        self._partial = _prefix((flat != FULL).any(dim=0) & seen)
        cols = torch.arange(seen.shape[1])
        first = torch.where(seen, cols, seen.shape[1]).amin(dim=1)  # (nq,)
        last = torch.where(seen, cols + 1, 0).amax(dim=1)  # (nq,)
        self._first, self._last = first.tolist(), last.tolist()
        self.density = _rect(self._seen, 0, seen.shape[0], 0, seen.shape[1]) / max(1, seen.numel())

    @classmethod
    def unclassified(
        cls, mask_mod: MaskMod, seq_lengths: tuple[int, int], block_size: tuple[int, int],
        device: torch.device,
    ) -> BlockMask:
        """Every block :data:`PARTIAL`: ``mask_mod`` is evaluated wherever keys are seen, and no
        value of it is read to build the table. Under ``torch.compile`` classifying the blocks
        would read the mask's values (a data-dependent graph break); this table is built from
        the sizes alone."""
        (lq, lk), (qbs, kbs) = seq_lengths, block_size
        nq, nk = -(-lq // qbs), -(-lk // kbs)
        self = cls.__new__(cls)
        self.mask_mod, self.band = mask_mod, None
        self.block_size, self.seq_lengths = block_size, seq_lengths
        self.table = torch.full((1, 1, nq, nk), PARTIAL, dtype=torch.int8, device=device)
        self._seen = self._partial = [[i * j for j in range(nk + 1)] for i in range(nq + 1)]
        self._first, self._last = [0] * nq, [nk] * nq
        self.density = 1.0
        return self

    def _blocks(self, q0: int, q1: int, k0: int, k1: int) -> tuple[int, int, int, int]:
        qbs, kbs = self.block_size
        return q0 // qbs, -(-q1 // qbs), k0 // kbs, -(-k1 // kbs)

    def status(self, q0: int, q1: int, k0: int, k1: int) -> int:
        """:data:`EMPTY`, :data:`PARTIAL` or :data:`FULL` for queries ``q0:q1``, keys ``k0:k1``."""
        box = self._blocks(q0, q1, k0, k1)
        if not _rect(self._seen, *box):
            return EMPTY
        return PARTIAL if _rect(self._partial, *box) else FULL

    def span(self, q0: int, q1: int) -> tuple[int, int]:
        """Keys ``[lo, hi)`` outside which every block of queries ``q0:q1`` is empty."""
        a, b, _, _ = self._blocks(q0, q1, 0, 0)
        kbs = self.block_size[1]
        return min(self._first[a:b]) * kbs, min(max(self._last[a:b]) * kbs, self.seq_lengths[1])

    def allowed(self, batch: int, heads: int, rows: Tensor, cols: Tensor) -> Tensor:
        """``mask_mod`` at query indices ``rows`` and key indices ``cols``:
        bool ``(B|1, H|1, *E)``."""
        out = self.mask_mod(*index_grid(batch, heads, rows, cols))
        return out.expand(*out.shape[:2], *torch.broadcast_shapes(rows.shape, cols.shape))


def _prefix(grid: Tensor) -> list[list[int]]:
    """2-D inclusive prefix sums of a bool grid, with a zero row and column in front."""
    rows = grid.to(torch.int64).cumsum(0).cumsum(1).tolist()
    return [[0] * (grid.shape[1] + 1)] + [[0, *r] for r in rows]


def _rect(prefix: list[list[int]], a: int, b: int, c: int, d: int) -> int:
    """Sum of the grid over rows ``a:b`` and columns ``c:d``."""
    return prefix[b][d] - prefix[a][d] - prefix[b][c] + prefix[a][c]


__all__ = ["EMPTY", "FULL", "PARTIAL", "BlockMask", "MaskMod", "index_grid"]
