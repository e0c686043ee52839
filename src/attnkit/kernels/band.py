"""The geometry of the ``local`` kernel's band: blocks of queries, their key windows, their
masks and the local layout (:class:`Band`); the kernel itself is :mod:`attnkit.kernels.local`.

Queries are cut into blocks of ``qb``; the queries of block ``b`` can only see the ``W = qb +
left + right`` keys starting at key position ``lo + b·qb`` with ``lo = offset − left`` (query
``i`` sits at key position ``offset + i``). Those key windows overlap and advance by ``qb``:
they are ``unfold`` views of a key buffer, so every block's scores are one batched matmul
``(qb × D) @ (D × W)`` and nothing outside the band is ever computed: cost and memory grow with
``length × window``, not ``length²``. Blocks whose windows lie inside ``0..Lk`` read the keys
themselves (no copy); the few blocks at either end read a small zero-padded copy. Each run of
blocks over one buffer is a :class:`Segment`. Blocks are processed a group at a time in one
reused workspace; keys, values and (when the length is a multiple of the block) queries and
outputs are used in place, not copied.

Inside a window, which slots the band shows is the same for every block: one ``(qb, W)`` bias
of 0 and ``-inf`` (asked of the :class:`Visibility` once). Blocks where anything else hides or
adds (the ends of the keys, key lengths, a bool mask or float bias) get their mask and bias
from :meth:`Visibility.at` on the band layout. A group of blocks is scored by
:meth:`Band.scores` or attended in one fused call by :meth:`Band.attend`.

Local layout of queries/outputs: ``(n, nb, G·qb, ·)`` with n = B·Hkv, nb blocks, G = Hq/Hkv;
windows ``(n, blocks, X, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.kernels.online import compute_dtype
from attnkit.kernels.plan import AttentionPlan
from attnkit.kernels.tile_scores import flash_tile
from attnkit.kernels.tiling import dropout_for
from attnkit.kernels.visibility import NEG_INF

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
        s, vis = plan.shapes, plan.visibility
        self.plan, self.vis, self.scale = plan, vis, scale
        assert vis.left is not None and vis.right is not None
        # A window wider than the sequences sees no more keys: query positions run from
        # offset to offset + Lq − 1 and keys from 0 to Lk − 1.
        left = min(vis.left, max(vis.offset + s.q_len - 1, 0))
        right = min(vis.right, max(s.kv_len - 1 - vis.offset, 0))
        self.n = s.batch * s.kv_heads
        self.kv_heads, self.group, self.q_len, self.kv_len = s.kv_heads, s.group, s.q_len, s.kv_len
        self.qb = block_size(left, right)
        self.nb = -(-s.q_len // self.qb)
        self.width = self.qb + left + right
        self.lo = vis.offset - left
        self.gb = max(1, _GROUP_ELEMENTS // (s.group * self.qb * self.width))
        self.dtype = compute_dtype(plan.dtype)
        self.dropout = dropout_for(plan)
        self.segments = self._segments()
        device, qb, w = plan.device, self.qb, self.width
        inside = vis.band_at(torch.arange(qb, device=device).unsqueeze(1),
                             self.lo + torch.arange(w, device=device))  # (qb, W) of any block
        band = torch.zeros(qb, w, dtype=self.dtype, device=device)
        if inside is not None:
            band.masked_fill_(~inside, NEG_INF)
        self.band = band.repeat(self.group, 1)  # (G·qb, W): the same for every head of a group
        plain = [  # blocks where nothing but the band hides a key
            vis.only_band(b * qb, min(b * qb + qb, s.q_len), self.lo + b * qb, self.lo + b * qb + w)
            for b in range(self.nb)
        ]
        self.groups = []  # (segment, b0, b1, nothing but the band hides a key there)
        for seg in self.segments:
            count = seg.end - seg.start
            size = -(-count // -(-count // self.gb))  # ceil(count / number of groups)
            for b0 in range(seg.start, seg.end, size):
                b1 = min(b0 + size, seg.end)
                self.groups.append((seg, b0, b1, all(plain[b0:b1])))
        self._extras: dict[tuple[int, int], Tensor] = {}

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
        """``(h, seg, b0, b1, plain)``: batch entry of ``B·Hkv``, segment, group of its blocks
        (the groups of a segment are of equal size, at most ``gb``), and whether nothing but
        the band hides a key there."""
        for h in range(self.n):
            for group in self.groups:
                yield h, *group

    # -- masks ------------------------------------------------------------------------------

    def _extra(self, b0: int, b1: int) -> Tensor:
        """What hides (``−inf``) or adds beyond the band in blocks ``b0:b1``, as one term
        ``(B|1, Hq|1, gb, qb, W)``; computed once per call (the backward pass reuses it)."""
        if (b0, b1) not in self._extras:
            device, qb = self.plan.device, self.qb
            blocks = torch.arange(b0, b1, device=device).view(-1, 1, 1) * qb  # (gb, 1, 1)
            rows = blocks + torch.arange(qb, device=device).view(1, -1, 1)  # (gb, qb, 1)
            cols = self.lo + blocks + torch.arange(self.width, device=device)  # (gb, 1, W)
            tile = self.vis.at(rows, cols)
            add = torch.zeros((), dtype=self.dtype, device=device)
            add = add if tile.bias is None else tile.bias.to(self.dtype)
            if tile.mask is not None:
                add = torch.where(tile.mask, add, NEG_INF)
            self._extras[(b0, b1)] = add
        return self._extras[(b0, b1)]

    def bias(self, tile: tuple[int, int, int, bool]) -> Tensor:
        """The additive term of a ``tile = (h, b0, b1, plain)``: the band's ``(G·qb, W)`` where
        nothing else hides a key, else ``(gb, G·qb, W)`` with what hides or adds beyond it."""
        h, b0, b1, plain = tile
        if plain:
            return self.band
        gb, g, qb, w = b1 - b0, self.group, self.qb, self.width
        add, (bi, hi) = self._extra(b0, b1), divmod(h, self.kv_heads)
        add = add[bi if add.shape[0] > 1 else 0]  # (Hq|1, gb, qb, W)
        add = add[hi * g : (hi + 1) * g] if add.shape[0] > 1 else add  # (G|1, gb, qb, W)
        both = self.band.view(g, qb, w) + add.transpose(0, 1)  # (gb, G, qb, W)
        return both.expand(gb, g, qb, w).reshape(gb, g * qb, w)  # (gb, G·qb, W)

    def scores(
        self, ws: Tensor, qloc: Tensor, kwin: Tensor, tile: tuple[int, int, int, bool]
    ) -> Tensor:
        """Masked scores ``scale · q kᵀ + bias`` of a ``tile = (h, b0, b1, plain)``, in
        ``ws``: ``(gb, G·qb, W)``."""
        h, b0, b1, _ = tile
        bias = self.bias(tile)
        s = ws[: b1 - b0]  # (gb, G·qb, W)
        return torch.baddbmm(bias.expand(s.shape), qloc[h, b0:b1], kwin, alpha=self.scale, out=s)

    def attend(self, qloc: Tensor, kwin: Tensor, vwin: Tensor, tile: tuple[int, int, int, bool],
               out: Tensor, lse: Tensor | None = None) -> None:
        """A tile's output into ``out (gb, G·qb, Dv)`` by PyTorch's fused attention (its CPU
        flash kernel keeps each row's scores, softmax and product in one loop: fewer passes
        over the window than :meth:`scores` then :func:`online.attend_`). No dropout: its
        keep-mask could not be regenerated for the backward pass. ``kwin (gb, D, W)``,
        ``vwin (gb, W, Dv)``. With ``lse (gb, G·qb)``, each row's log-sum-exp is written
        there too (``−inf`` for a row that sees nothing), by the CPU kernel itself
        (:func:`flash_tile`; only where :func:`flash_fuses`)."""
        h, b0, b1, plain = tile
        bias = self.bias(tile)
        if lse is not None:
            found, found_lse = flash_tile(qloc[h, b0:b1], kwin.transpose(1, 2), vwin,
                                          bias.view(-1, *bias.shape[-2:]), self.scale)
            out.copy_(found)  # (gb, G·qb, Dv)
            lse.copy_(found_lse)  # (gb, G·qb)
            return
        found = F.scaled_dot_product_attention(
            qloc[h, b0:b1].unsqueeze(1), kwin.transpose(1, 2).unsqueeze(1), vwin.unsqueeze(1),
            attn_mask=bias.view(-1, 1, *bias.shape[-2:]), scale=self.scale,
        )  # (gb, 1, G·qb, Dv); a 4-d mask (a 3-d one takes PyTorch 1.6× longer)
        out.copy_(found.squeeze(1))
        if not plain:
            out.nan_to_num_(0.0)  # a row with nothing to see: 0 (some devices give NaN)

    # -- query layout -----------------------------------------------------------------------

    @property
    def aligned(self) -> bool:
        """Whether the local layout is a plain view of the rows layout (no copies)."""
        return self.group == 1 and self.nb * self.qb == self.q_len

    def to_local(self, rows: Tensor) -> Tensor:
        """``(n, G·Lq, X)`` -> ``(n, nb, G·qb, X)``: a view when :attr:`aligned`, else one
        copy, zeros past the last query (with grouped heads, as in gpt-oss, a zero-filled
        buffer and a second copy took 61 of the forward's 250 ms at N = 4096, G = 8)."""
        n, _, x = rows.shape
        g, lq, nb, qb = self.group, self.q_len, self.nb, self.qb
        if self.aligned:
            return rows.view(n, nb, qb, x)
        whole = lq // qb  # blocks without padding
        loc = rows.new_empty(n, nb, g, qb, x)  # (n, nb, G, qb, X)
        grouped = rows.view(n, g, lq, x)  # (n, G, Lq, X)
        loc[:, :whole] = grouped[:, :, : whole * qb].view(n, g, whole, qb, x).transpose(1, 2)
        if whole < nb:  # the last block: its queries, then zeros
            loc[:, whole, :, lq - whole * qb :] = 0
            loc[:, whole, :, : lq - whole * qb] = grouped[:, :, whole * qb :]
        return loc.view(n, nb, g * qb, x)  # (n, nb, G·qb, X)

    def from_local(self, loc: Tensor) -> Tensor:
        """Inverse of :meth:`to_local`: ``(n, nb, G·qb, X)`` -> ``(n, G·Lq, X)`` (a view when
        :attr:`aligned`, else one copy)."""
        n, nb, _, x = loc.shape
        g, lq, qb = self.group, self.q_len, self.qb
        grouped = loc.view(n, nb, g, qb, x).transpose(1, 2)  # (n, G, nb, qb, X)
        if nb * qb == lq:
            return grouped.reshape(n, g * lq, x)  # (n, G·Lq, X)
        whole = lq // qb
        rows = loc.new_empty(n, g, lq, x)  # (n, G, Lq, X)
        rows[:, :, : whole * qb].view(n, g, whole, qb, x).copy_(grouped[:, :, :whole])
        rows[:, :, whole * qb :] = grouped[:, :, whole, : lq - whole * qb]
        return rows.view(n, g * lq, x)  # (n, G·Lq, X)

    def workspace(self, *widths: int) -> list[Tensor]:
        """One reused ``(gb, G·qb, X)`` buffer per width: tiles write into these, never into
        fresh memory."""
        rows, device = self.group * self.qb, self.plan.device
        return [torch.empty(self.gb, rows, x, dtype=self.dtype, device=device) for x in widths]
