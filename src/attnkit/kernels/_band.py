"""The geometry of banded (local) attention: blocks, key windows, masks, layouts.

Query block ``b`` (queries ``b·qb .. b·qb + qb``) sees the ``W = qb + left + right`` keys
starting at key position ``lo + b·qb`` with ``lo = Lk − Lq − left``. Windows of consecutive
blocks overlap and advance by ``qb``: they are ``unfold`` views of a key buffer. Blocks whose
windows lie inside ``0..Lk`` read the keys themselves (no copy); the few blocks at either end
read a small zero-padded copy. Each run of blocks over one buffer is a :class:`Segment`.

Shape legend: n = B·Hkv, nb blocks, qb queries per block, W window, G = Hq/Hkv, D/Dv dims.
Local layout of queries/outputs: ``(n, nb, G·qb, ·)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.kernels._blocks import NEG_INF, BlockDropout, Blocks, compute_dtype
from attnkit.kernels.plan import AttentionPlan

_GROUP_ELEMENTS = 1 << 19  # window scores per group of blocks of one batch entry (2 MiB)


def block_size(left: int, right: int) -> int:
    """Queries per block for a band of ``left + right + 1`` keys: about an eighth of the band,
    a power of two in ``[16, 128]`` (smaller blocks waste less of each window, larger ones make
    better matmuls)."""
    size = 16
    while size < 128 and size * 8 < left + right:
        size *= 2
    return size


@dataclass(frozen=True)
class Segment:
    """Blocks ``start .. end`` whose windows come from one key buffer; in that buffer the
    window of block ``b`` starts at row ``base + (b − start)·qb``; ``pos0`` is the key position
    of the buffer's row 0 (``None``: the buffer is the keys themselves)."""

    start: int
    end: int
    base: int
    pos0: int | None
    length: int  # rows of a padded buffer


class Band:
    """Everything about one banded call that does not depend on the tensors' values."""

    def __init__(self, plan: AttentionPlan, scale: float) -> None:
        s = plan.shapes
        self.plan, self.blocks, self.scale = plan, Blocks(plan), scale
        left, right = self.blocks.left, self.blocks.right
        if left is None or right is None:
            raise ValueError(f"local kernel: needs a bounded window, got {plan.window}")
        # A window wider than the sequences sees no more keys: query positions run from
        # Lk − Lq to Lk − 1, so no key lies further left than Lk − 1 or right than Lq − 1.
        left, right = min(left, max(s.kv_len - 1, 0)), min(right, max(s.q_len - 1, 0))
        self.left, self.right = left, right
        self.n = s.batch * s.kv_heads
        self.group, self.q_len, self.kv_len = s.group, s.q_len, s.kv_len
        self.qb = block_size(left, right)
        self.nb = -(-s.q_len // self.qb)
        self.width = self.qb + left + right
        self.lo = s.kv_len - s.q_len - left
        self.gb = max(1, _GROUP_ELEMENTS // (s.group * self.qb * self.width))
        self.dtype = compute_dtype(plan.dtype)
        self.dropout = BlockDropout(plan.dropout_p, plan.device) if plan.dropout_p > 0 else None
        self.segments = self._segments()
        self._structure()

    # -- windows ----------------------------------------------------------------------------

    def _segments(self) -> list[Segment]:
        qb, w, lo, lk, nb = self.qb, self.width, self.lo, self.kv_len, self.nb
        first = min(nb, max(0, -(lo // qb) if lo < 0 else 0))  # first window starting >= 0
        last = min(nb, max(first, (lk - w - lo) // qb + 1)) if lk >= w else first
        if last - first < self.gb:  # few blocks: one padded copy, fewer and fuller tiles
            first = last = 0
        runs = [(0, first), (first, last), (last, nb)] if last > first else [(0, nb)]
        segments = []
        for start, end in runs:
            if end <= start:
                continue
            if last > first and (start, end) == (first, last):  # windows inside the keys
                segments.append(Segment(start, end, lo + start * qb, None, lk))
            else:
                length = (end - start - 1) * qb + w
                segments.append(Segment(start, end, 0, lo + start * qb, length))
        return segments

    def buffer(self, rows: Tensor, seg: Segment) -> Tensor:
        """The key (or value) buffer ``(n, ·, X)`` of a segment: ``rows (n, Lk, X)`` itself,
        or a zero-padded copy of the positions its windows cover."""
        if seg.pos0 is None:
            return rows
        out = rows.new_zeros(rows.shape[0], seg.length, rows.shape[2])
        a, b = max(seg.pos0, 0), min(seg.pos0 + seg.length, self.kv_len)
        if b > a:
            out[:, a - seg.pos0 : b - seg.pos0] = rows[:, a:b]
        return out

    def windows(self, buffer: Tensor, seg: Segment) -> Tensor:
        """``(n, blocks, X, W)``: the overlapping windows of the segment's blocks, a view."""
        return buffer[:, seg.base :].unfold(1, self.width, self.qb)[:, : seg.end - seg.start]

    def add_windows(self, acc: Tensor, grad: Tensor, seg: Segment, b0: int, b1: int) -> None:
        """Sum ``grad (gb, W, X)`` of blocks ``b0:b1`` into their windows' rows of
        ``acc (rows, X)`` (the segment's buffer rows, with ``qb`` rows of slack at the end).
        Slots ``s·qb .. s·qb + qb`` of consecutive blocks never overlap, so each is one add."""
        qb, w, x = self.qb, self.width, grad.shape[-1]
        first = seg.base + (b0 - seg.start) * qb
        for s0 in range(0, w, qb):
            span = min(qb, w - s0)
            rows = acc[first + s0 : first + s0 + (b1 - b0) * qb].view(b1 - b0, qb, x)
            rows[:, :span] += grad[:, s0 : s0 + span]

    def tiles(self):
        """``(h, seg, b0, b1)``: batch entry of ``B·Hkv``, segment, group of its blocks (the
        groups of a segment are of equal size, at most ``gb``)."""
        for h in range(self.n):
            for seg in self.segments:
                count = seg.end - seg.start
                size = -(-count // -(-count // self.gb))  # ceil(count / number of groups)
                for b0 in range(seg.start, seg.end, size):
                    yield h, seg, b0, min(b0 + size, seg.end)

    # -- masks ------------------------------------------------------------------------------

    def _structure(self) -> None:
        """The band as an additive bias ``band (G·qb, W)`` (0 inside, ``-inf`` outside); which
        window slots are real keys, ``real (B|1, nb, W)``; the blocks that have others."""
        device, qb, w = self.plan.device, self.qb, self.width
        i = torch.arange(qb, device=device).unsqueeze(1)  # (qb, 1)
        j = torch.arange(w, device=device)  # (W,)
        inside = (j >= i) & (j <= i + self.left + self.right)  # (qb, W)
        band = torch.zeros(qb, w, dtype=self.dtype, device=device).masked_fill_(~inside, NEG_INF)
        self.band = band.repeat(self.group, 1)  # (G·qb, W): the same for every head of a group
        pos = self.lo + torch.arange(self.nb, device=device).unsqueeze(1) * qb + j  # (nb, W)
        real = (pos >= 0) & (pos < self.kv_len)  # (nb, W)
        lengths = self.plan.key_lengths
        if lengths is not None:
            self.real = real & (pos < lengths.to(device).view(-1, 1, 1))  # (B, nb, W)
        else:
            self.real = real.unsqueeze(0)  # (1, nb, W)
        self.edge = (~self.real.all(dim=-1).all(dim=0)).tolist()  # per block

    def mask_(self, s: Tensor, h: int, b0: int, b1: int) -> Tensor:
        """Hide, in ``s (gb, G·qb, W)`` (band bias already added), what else is hidden."""
        gb, g, qb, w = b1 - b0, self.group, self.qb, self.width
        s4 = s.view(gb, g, qb, w)  # (gb, G, qb, W)
        bi, hi = divmod(h, self.n // self.blocks.batch)
        if self.plan.bias is not None:
            s4.add_(self._gather(self.plan.bias, bi, hi, b0, b1).to(s.dtype))
        edges = [b for b in range(b0, b1) if self.edge[b]]
        real = self.real[bi if self.real.shape[0] > 1 else 0]  # (nb, W)
        if 0 < len(edges) <= 4:  # a few blocks at the ends of the keys
            for b in edges:
                s4[b - b0].masked_fill_(~real[b], NEG_INF)  # (G, qb, W) by (W,)
        elif edges:
            s4.masked_fill_(~real[b0:b1].view(gb, 1, 1, w), NEG_INF)  # (gb, 1, 1, W)
        if self.plan.mask is not None:
            s4.masked_fill_(~self._gather(self.plan.mask, bi, hi, b0, b1), NEG_INF)
        return s

    def may_be_empty(self, b0: int, b1: int) -> bool:
        """Whether a query of blocks ``b0:b1`` may have no key at all to attend to."""
        plan = self.plan
        return plan.mask is not None or plan.bias is not None or any(self.edge[b0:b1])

    def _gather(self, t: Tensor, bi: int, hi: int, b0: int, b1: int) -> Tensor:
        """The band of ``t (B|1, Hq|1, Lq|1, Lk|1)`` for batch ``bi``, key/value head ``hi``
        and blocks ``b0:b1``: ``(gb, G|1, qb, W)``."""
        device, qb, g = t.device, self.qb, self.group
        t = t[bi if t.shape[0] > 1 else 0]  # (Hq|1, Lq|1, Lk|1)
        t = t[hi * g : (hi + 1) * g] if t.shape[0] > 1 else t  # (G|1, Lq|1, Lk|1)
        blocks_ = torch.arange(b0, b1, device=device).unsqueeze(1)  # (gb, 1)
        rows = blocks_ * qb + torch.arange(qb, device=device)  # (gb, qb)
        cols = self.lo + blocks_ * qb + torch.arange(self.width, device=device)  # (gb, W)
        rows = rows.clamp(0, t.shape[1] - 1) if t.shape[1] > 1 else torch.zeros_like(rows)
        cols = cols.clamp(0, t.shape[2] - 1) if t.shape[2] > 1 else torch.zeros_like(cols)
        band = t[:, rows.unsqueeze(-1), cols.unsqueeze(1)]  # (G|1, gb, qb, W)
        return band.transpose(0, 1)  # (gb, G|1, qb, W)

    # -- query layout -----------------------------------------------------------------------

    @property
    def aligned(self) -> bool:
        """Whether the local layout is a plain view of the rows layout (no copies)."""
        return self.group == 1 and self.nb * self.qb == self.q_len

    def to_local(self, rows: Tensor) -> Tensor:
        """``(n, G·Lq, X)`` -> ``(n, nb, G·qb, X)``: a view when :attr:`aligned`, else a
        zero-padded copy."""
        n, _, x = rows.shape
        g, lq, nb, qb = self.group, self.q_len, self.nb, self.qb
        if self.aligned:
            return rows.view(n, nb, qb, x)
        padded = rows.new_zeros(n, g, nb * qb, x)  # (n, G, nb·qb, X)
        padded[:, :, :lq] = rows.view(n, g, lq, x)
        blocked = padded.view(n, g, nb, qb, x).transpose(1, 2)  # (n, nb, G, qb, X)
        return blocked.reshape(n, nb, g * qb, x)  # (n, nb, G·qb, X)

    def from_local(self, loc: Tensor) -> Tensor:
        """Inverse of :meth:`to_local`: ``(n, nb, G·qb, X)`` -> ``(n, G·Lq, X)``."""
        n, nb, _, x = loc.shape
        g, lq, qb = self.group, self.q_len, self.qb
        grouped = loc.view(n, nb, g, qb, x).transpose(1, 2)  # (n, G, nb, qb, X)
        return grouped.reshape(n, g, nb * qb, x)[:, :, :lq].reshape(n, g * lq, x)
