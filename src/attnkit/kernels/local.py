"""The ``local`` kernel: banded attention for ``window=(left, right)``, with or without causal.

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

Within a window the whole row of a query is present, so the softmax is exact in one step.
The forward pass hands a group of blocks (queries, key and value windows, all views) to
PyTorch's fused ``scaled_dot_product_attention``, whose CPU flash kernel makes each block's
scores, softmax and product in one loop (about 10 % less time than a ``baddbmm``, PyTorch's
softmax and a ``bmm`` over the same windows, N = 16384, one thread); with dropout it runs
those three itself (:func:`online.attend_` with no merging), since the backward pass must
regenerate the keep-mask. Inside a window, which slots the band shows is the same for every
block: one ``(qb, W)`` bias of 0 and ``-inf`` (asked of the :class:`Visibility` once). Blocks
where anything else hides or adds (the ends of the keys, key lengths, a bool mask or float
bias) get their mask and bias from :meth:`Visibility.at` on the band layout.

Backward: an autograd function saving ``q, k, v, out`` (``O(length)``) that recomputes each
group (:func:`online.tile_grads`); the key/value window gradients overlap and are summed back
window slot by window slot. Dropout regenerates its keep-mask per group from a seed.

Attention sinks (normalizer ``softmax_with_sinks``, gpt-oss's sliding layers): each group's
log-sum-exp comes with its output (PyTorch's fused CPU kernel returns it, :func:`flash_tile`;
elsewhere, or with dropout, :func:`online.attend_` makes it), and each row's sink is merged
into the group's output while it is in cache, as a key of score ``σ`` and value 0
(:func:`online.merge_` with ``out_b=None``: ``O' = O · exp(lse − lse')``,
``lse' = log(e^{lse} + e^{σ})``). The backward pass saves ``lse'`` and recomputes each
window's true weights ``P' = exp(S − lse')`` (the sink's share left out; on CPU ``exp`` of a
tile costs less than the softmax it replaces); ``D = rowsum(dO ∘ O')`` as without sinks, and
the sinks' gradient ``−D · p_sink`` is :func:`online.sink_grad`'s. A row that sees no key
gives 0, its weight all on the sink.

Serves softmax (and softmax with sinks) over dot-product scores, bool masks, float biases
(without their gradient), key lengths, causal, grouped heads, dropout, sinks (under
``torch.compile`` too: the custom operator returns ``lse'`` for its backward pass). It returns
neither weights (``chunked`` does) nor the log-sum-exp (``None``: no caller of the band needs
it, and without sinks it would cost two more passes).

Shapes: q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) -> out (B, Hq, Lq, Dv).
Local layout of queries/outputs: ``(n, nb, G·qb, ·)`` with n = B·Hkv, nb blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.kernels import online, ops
from attnkit.kernels.online import compute_dtype, from_rows, to_rows
from attnkit.kernels.plan import AttentionPlan
from attnkit.kernels.registry import FLOATS, SOFTMAX, Capabilities, Kernel
from attnkit.kernels.tile_scores import flash_fuses, flash_tile
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


def local(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Banded attention; see the module docstring."""
    form = plan.score.dot
    assert form is not None  # guaranteed by the capabilities (dot_product_scores=True)
    cd = compute_dtype(q.dtype)  # transform q, k in the compute dtype, as the reference does
    qp, kp = form.prepare_q(q.to(cd)), form.prepare_k(k.to(cd))
    if torch.compiler.is_compiling():  # one opaque operator (see kernels/ops.py)
        # with sinks the operator returns lse' for its backward pass; the caller gets none
        out, _, _ = ops.run("local", [qp, kp, v], plan, form.scale,
                            need_lse=plan.sinks is not None)
        return out, None, None
    out = _LocalAttention.apply(qp, kp, v, plan.sinks, Band(plan, form.scale))
    return out, None, None


def _refuses(plan: AttentionPlan) -> str | None:
    vis = plan.visibility
    if vis.left is None or vis.right is None:
        return "no window: local attention needs window=(left, right)"
    if not vis.uniform:
        return "per-sequence query positions or query lengths not supported"
    if plan.needs_grad and vis.bias is not None and vis.bias.requires_grad:
        return "gradient of a float (additive) mask not supported"
    return None


def _declines(plan: AttentionPlan) -> str | None:
    vis = plan.visibility
    assert vis.left is not None and vis.right is not None
    width = block_size(vis.left, vis.right) + vis.left + vis.right
    if 2 * width > vis.kv_len:
        return (
            f"window {(vis.left, vis.right)} makes each block of queries see {width} of the "
            f"{vis.kv_len} keys: dense kernels are faster"
        )
    return None


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


def _rows(band: Band, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``qr (n, G·Lq, D)``, ``kr, vr (n, Lk, D|Dv)`` in the compute dtype."""
    cd, hkv = band.dtype, band.kv_heads
    return to_rows(q, hkv, cd), to_rows(k, hkv, cd), to_rows(v, hkv, cd)


def _forward(
    band: Band, qr: Tensor, kr: Tensor, vr: Tensor, sink: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """The output in the local layout ``(n, nb, G·qb, Dv)``, compute dtype, and ``None``; or,
    given the sinks ``sink (n, nb, G·qb)`` in that layout, the output with each row's sink
    merged in as a key of score ``σ`` and value 0 (:func:`online.merge_`), and each row's
    log-sum-exp ``lse' (n, nb, G·qb)`` over the window and the sink."""
    cd = band.dtype
    qloc = band.to_local(qr)  # (n, nb, G·qb, D)
    n, nb, rows, _ = qloc.shape
    out = torch.empty(n, nb, rows, vr.shape[2], dtype=cd, device=qr.device)
    lse = None if sink is None else torch.empty(n, nb, rows, dtype=cd, device=qr.device)
    # PyTorch's fused attention gives no lse off CPU: those tiles go through attend_
    fused = band.dropout is None and (lse is None or flash_fuses(qr, kr, vr))
    ws = None if fused else band.workspace(band.width)[0]
    windows = {}
    for seg in band.segments:
        kb, vb = band.buffer(kr, seg), band.buffer(vr, seg)
        windows[seg] = (band.windows(kb, seg), band.windows(vb, seg).transpose(-1, -2))
    for h, seg, b0, b1, plain in band.tiles():
        kwin, vwin = windows[seg]  # (n, blocks, D, W), (n, blocks, W, Dv)
        i0, i1, tile = b0 - seg.start, b1 - seg.start, (h, b0, b1, plain)
        lse_t = None if lse is None else lse[h, b0:b1]  # (gb, G·qb)
        if fused:
            band.attend(qloc, kwin[h, i0:i1], vwin[h, i0:i1], tile, out[h, b0:b1], lse_t)
        else:
            assert ws is not None
            s = band.scores(ws, qloc, kwin[h, i0:i1], tile)  # (gb, G·qb, W)
            keep = None if band.dropout is None else band.dropout.keep((h, b0, 0), s.shape,
                                                                       s.dtype)
            online.attend_(s, vwin[h, i0:i1], out[h, b0:b1], lse_t, first=True,
                           may_be_empty=not plain, keep=keep)
        if sink is not None:  # while the group's output is in cache: out · exp(lse − lse')
            online.merge_(out[h, b0:b1], lse_t, None, sink[h, b0:b1])  # lse' in lse
    return out, lse


def _backward(
    band: Band, saved: tuple[Tensor, ...], dout: Tensor, sink_grad: bool = False
) -> tuple[Tensor, ...]:
    """``dq (B, Hq, Lq, D)``, ``dk (B, Hkv, Lk, D)``, ``dv (B, Hkv, Lk, Dv)`` in the compute
    dtype, from ``saved = (qr, kr, vr, out)`` (``out`` in the local layout) or, with sinks,
    ``(qr, kr, vr, out', lse', sink)`` as :func:`_forward` left them: each window's weights
    are then recomputed as ``P' = exp(S − lse')`` (the share the sink took left out) and,
    with ``sink_grad``, the sinks' gradient ``(B, Hq, Lq)`` follows
    (:func:`online.sink_grad`)."""
    qr, kr, vr, out = saved[:4]
    lse, sink = saved[4:] if len(saved) > 4 else (None, None)
    hkv, qb, lk = band.kv_heads, band.qb, band.kv_len
    qloc = band.to_local(qr)  # (n, nb, G·qb, D)
    do_loc = band.to_local(to_rows(dout, hkv, out.dtype))  # (n, nb, G·qb, Dv)
    lse_safe = None  # rows of σ = −inf that see nothing have lse' −inf: 0 there, so P' is 0
    if lse is not None:
        lse_safe = lse.masked_fill(lse == NEG_INF, 0.0).unsqueeze(-1)  # (n, nb, G·qb, 1)
    # D = rowsum(dO ∘ O), a group at a time while its rows are in cache (vecdot over the
    # whole output makes a temporary of its size: 39 against 12 ms at gpt-oss's N = 4096)
    row_dot = out.new_empty(out.shape[:-1])  # (n, nb, G·qb)
    dq = torch.empty_like(qloc) if not band.aligned else torch.empty_like(qr)
    dq_loc = dq if not band.aligned else band.to_local(dq)  # (n, nb, G·qb, D)
    ws, wdp = band.workspace(band.width, band.width)
    wdk, wdv = (kr.new_empty(band.gb, band.width, x.shape[2]) for x in (kr, vr))  # (gb, W, ·)
    # Key/value gradients, with qb rows of slack: the last slot chunk may run past the end.
    dk_acc = kr.new_zeros(kr.shape[0], lk + qb, kr.shape[2])  # (n, Lk + qb, D)
    dv_acc = vr.new_zeros(vr.shape[0], lk + qb, vr.shape[2])  # (n, Lk + qb, Dv)
    tiles = {}
    for seg in band.segments:
        kb, vb = band.buffer(kr, seg), band.buffer(vr, seg)
        if seg.pos0 is None:  # windows inside the keys: accumulate in place
            dkb, dvb = dk_acc, dv_acc
        else:
            dkb = kr.new_zeros(kr.shape[0], seg.length + qb, kr.shape[2])
            dvb = vr.new_zeros(vr.shape[0], seg.length + qb, vr.shape[2])
        tiles[seg] = (band.windows(kb, seg), band.windows(vb, seg), dkb, dvb)
    for h, seg, b0, b1, plain in band.tiles():
        kwin, vwin_t, dkb, dvb = tiles[seg]  # (n, blocks, D|Dv, W), grads (n, rows, ·)
        i0, i1, gb = b0 - seg.start, b1 - seg.start, b1 - b0
        torch.linalg.vecdot(do_loc[h, b0:b1], out[h, b0:b1], out=row_dot[h, b0:b1])
        p = band.scores(ws, qloc, kwin[h, i0:i1], (h, b0, b1, plain))  # (gb, G·qb, W)
        if lse_safe is None:
            online.softmax_(p, not plain, lse=False)  # P again, in place
        else:
            p.sub_(lse_safe[h, b0:b1]).exp_()  # P' = exp(S − lse'), in place
        keep = None if band.dropout is None else band.dropout.keep((h, b0, 0), p.shape, p.dtype)
        ds = online.tile_grads(
            p, do_loc[h, b0:b1], vwin_t[h, i0:i1], wdv[:gb],
            row_dot=row_dot[h, b0:b1].unsqueeze(-1), accumulate=False, keep=keep, work=wdp[:gb],
        )  # dS (gb, G·qb, W); wdv holds dV of the windows (gb, W, Dv)
        torch.bmm(ds, kwin[h, i0:i1].transpose(1, 2), out=dq_loc[h, b0:b1])
        dkwin = torch.bmm(ds.transpose(1, 2), qloc[h, b0:b1], out=wdk[:gb])  # (gb, W, D)
        band.add_windows(dkb[h], dkwin, seg, b0, b1)
        band.add_windows(dvb[h], wdv[:gb], seg, b0, b1)
    for seg, (_, _, dkb, dvb) in tiles.items():
        if seg.pos0 is not None:  # a padded end: add the rows that are real keys
            a, b = max(seg.pos0, 0), min(seg.pos0 + seg.length, lk)
            if b > a:
                dk_acc[:, a:b] += dkb[:, a - seg.pos0 : b - seg.pos0]
                dv_acc[:, a:b] += dvb[:, a - seg.pos0 : b - seg.pos0]
    dk, dv = dk_acc[:, :lk], dv_acc[:, :lk]  # (n, Lk, D|Dv)
    b, hq = band.n // hkv, band.group * hkv
    dq_rows = (dq if band.aligned else band.from_local(dq_loc)).mul_(band.scale)
    grads = (
        from_rows(dq_rows, b, hq),  # (B, Hq, Lq, D)
        dk.mul_(band.scale).reshape(b, hkv, *dk.shape[1:]),  # (B, Hkv, Lk, D)
        dv.reshape(b, hkv, *dv.shape[1:]),  # (B, Hkv, Lk, Dv)
    )
    if not sink_grad:
        return grads
    assert lse is not None and sink is not None
    dsink = online.sink_grad(do_loc, out, lse, sink, row_dot)  # (n, nb, G·qb)
    return *grads, _row_user(band, dsink)  # (B, Hq, Lq)


def _row_local(band: Band, values: Tensor) -> Tensor:
    """One value per row ``(B, Hq, Lq)`` (the plan's sinks, an lse) in the local layout
    ``(n, nb, G·qb)``, compute dtype."""
    rows = to_rows(values.unsqueeze(-1), band.kv_heads, band.dtype)  # (n, G·Lq, 1)
    return band.to_local(rows).squeeze(-1)  # (n, nb, G·qb)


def _row_user(band: Band, local: Tensor) -> Tensor:
    """The inverse of :func:`_row_local`: ``(n, nb, G·qb)`` -> ``(B, Hq, Lq)``."""
    rows = band.from_local(local.unsqueeze(-1)).squeeze(-1)  # (n, G·Lq)
    return from_rows(rows, band.n // band.kv_heads, band.group * band.kv_heads)  # (B, Hq, Lq)


class _LocalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, sinks: Tensor | None, band: Band):
        qr, kr, vr = _rows(band, q, k, v)
        sink = None if sinks is None else _row_local(band, sinks)
        out, lse = _forward(band, qr, kr, vr, sink)
        ctx.save_for_backward(qr, kr, vr, out, *(() if sink is None else (lse, sink)))
        ctx.band = band
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, None if sinks is None else sinks.dtype)
        return from_rows(band.from_local(out), band.n // band.kv_heads,
                         band.group * band.kv_heads).to(v.dtype)

    @staticmethod
    def backward(ctx: Any, dout: Tensor):
        online.no_double_backward("local")
        grads = _backward(ctx.band, ctx.saved_tensors, dout, sink_grad=ctx.needs_input_grad[3])
        dsinks = grads[3] if len(grads) > 3 else None
        q_dtype, k_dtype, v_dtype, s_dtype = ctx.dtypes
        return (grads[0].to(q_dtype), grads[1].to(k_dtype), grads[2].to(v_dtype),
                None if dsinks is None else dsinks.to(s_dtype), None)


def _op_forward(inputs: list[Tensor], plan: AttentionPlan) -> list[Tensor]:
    """``attnkit::block_attention``'s local forward (see :mod:`attnkit.kernels.ops`); with
    sinks, ``lse'`` is returned for the backward pass."""
    band = Band(plan, plan.score.scale)
    sink = None if plan.sinks is None else _row_local(band, plan.sinks)  # (n, nb, G·qb)
    out, lse = _forward(band, *_rows(band, *inputs), sink)
    rows = band.from_local(out)  # (n, G·Lq, Dv)
    return [from_rows(rows, band.n // band.kv_heads, band.group * band.kv_heads),
            ops.empty(rows) if lse is None else _row_user(band, lse), ops.empty(rows)]


def _op_backward(
    grads: list[Tensor | None], inputs: list[Tensor], outputs: list[Tensor], plan: AttentionPlan,
    bias_grad: bool, sink_grad: bool,
) -> list[Tensor]:
    """``attnkit::block_attention_backward`` for local (no bias gradient: refused)."""
    band = Band(plan, plan.score.scale)
    out = band.to_local(to_rows(outputs[0], band.kv_heads, band.dtype))  # (n, nb, G·qb, Dv)
    dout = grads[0] if grads[0] is not None else torch.zeros_like(outputs[0])
    sinks = () if plan.sinks is None else (_row_local(band, outputs[1]),  # lse' (n, nb, G·qb)
                                           _row_local(band, plan.sinks))
    found = _backward(band, (*_rows(band, *inputs), out, *sinks), dout,
                      sink_grad=sink_grad and plan.sinks is not None)
    dsinks = found[3] if len(found) > 3 else ops.empty(found[0])
    return [*found[:3], ops.empty(found[0]), dsinks]  # (no two returns may be one tensor)


ops.register_op_kernel("local", _op_forward, _op_backward)


KERNEL = Kernel(
    "local",
    local,
    Capabilities(
        dot_product_scores=True, normalizers=SOFTMAX | {"softmax_with_sinks"}, mask_mod=False,
        score_mod=False, weights=False, dtypes=FLOATS, extra=_refuses,
    ),
    declines=_declines,
    priority=5,
    description="banded attention: only the key windows of each query block",
)
