"""The ``local`` kernel: banded attention for ``window=(left, right)``, with or without causal.

Queries are cut into blocks of ``qb``; the queries of block ``b`` can only see the ``W = qb +
left + right`` keys starting at key position ``Lk − Lq + b·qb − left``. Those key windows are
overlapping strided views of the keys (``unfold``; see ``_band``), so every block's scores are
one batched matmul ``(qb × D) @ (D × W)`` and nothing outside the band is ever computed: cost
and memory grow with ``length × window``, not ``length²``. Within a window the whole row of a
query is present, so the softmax is exact in one step (no online rescaling). Blocks are
processed a group at a time in one reused workspace; keys, values and (when the length is a
multiple of the block) queries and outputs are used in place, not copied.

Inside a window, query ``i`` sees window slot ``j`` when ``i ≤ j ≤ i + left + right``: the same
pattern for every block, so it is one ``(qb, W)`` bias of 0 and ``-inf`` that the score matmul
adds itself (``baddbmm``). Slots outside ``0..Lk`` or beyond the key lengths (only in the blocks
at the ends), or hidden by a bool mask, are set to ``-inf``; a float bias is gathered along the
band. Each window row is normalised by PyTorch's fused softmax in place.

Backward: an autograd function saving ``q, k, v, out`` (``O(length)``) that recomputes each
group; the key/value window gradients overlap and are summed back window slot by window
slot. Dropout regenerates its keep-mask per group from a seed.

Serves softmax over dot-product scores, bool masks, float biases (without their gradient),
key lengths, causal, grouped heads, dropout. It returns neither weights (``chunked`` does) nor
the log-sum-exp (``None``: no caller of the band needs it, and it would cost two more passes).

Shapes: q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) -> out (B, Hq, Lq, Dv).
Local layout: ``(B·Hkv, nb, G·qb, ·)`` (block-major queries).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnkit.kernels._band import Band, block_size
from attnkit.kernels._blocks import compute_dtype, from_rows, softmax_, to_rows
from attnkit.kernels.plan import AttentionPlan

__all__ = ["block_size", "local"]


def local(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Banded attention; see the module docstring.

    Raises:
        ValueError: no window, a score that is not a dot product, a normalizer that is not
            softmax, or asking for weights (the registry keeps such plans away).
    """
    form = plan.dot_form
    if form is None or plan.normalizer_name != "softmax" or plan.window is None:
        raise ValueError(
            f"local kernel: needs softmax over a dot-product score and a window, got score "
            f"{plan.score_name!r}, normalizer {plan.normalizer_name!r}, window {plan.window}"
        )
    if plan.return_weights:
        raise ValueError("local kernel: cannot return weights; use backend='chunked'")
    band = Band(plan, form.scale)
    cd = compute_dtype(q.dtype)  # transform q, k in the compute dtype, as the reference does
    out = _LocalAttention.apply(form.prepare_q(q.to(cd)), form.prepare_k(k.to(cd)), v, band)
    return out, None, None


def _workspace(band: Band, *widths: int) -> list[Tensor]:
    """One reused ``(gb, G·qb, X)`` buffer per width: tiles write into these, never into
    fresh memory."""
    rows, device = band.group * band.qb, band.plan.device
    return [torch.empty(band.gb, rows, x, dtype=band.dtype, device=device) for x in widths]


def _scores(band: Band, ws: Tensor, qloc: Tensor, kwin: Tensor, h: int, b0: int, b1: int):
    """Masked scores ``scale · q kᵀ`` (+ band bias) of blocks ``b0:b1``, in ``ws``."""
    s = ws[: b1 - b0]  # (gb, G·qb, W)
    bias = band.band.expand(b1 - b0, *band.band.shape)  # (gb, G·qb, W)
    torch.baddbmm(bias, qloc[h, b0:b1], kwin, alpha=band.scale, out=s)
    return band.mask_(s, h, b0, b1)


class _LocalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, band: Band):
        cd = band.dtype
        hkv = k.shape[1]
        qr = to_rows(q, hkv, cd)  # (n, G·Lq, D)
        kr, vr = to_rows(k, hkv, cd), to_rows(v, hkv, cd)  # (n, Lk, D|Dv)
        qloc = band.to_local(qr)  # (n, nb, G·qb, D)
        n, nb, rows, _ = qloc.shape
        out = torch.empty(n, nb, rows, vr.shape[2], dtype=cd, device=q.device)
        (ws,) = _workspace(band, band.width)
        windows = {}
        for seg in band.segments:
            kb, vb = band.buffer(kr, seg), band.buffer(vr, seg)
            windows[seg] = (band.windows(kb, seg), band.windows(vb, seg).transpose(-1, -2))
        for h, seg, b0, b1 in band.tiles():
            kwin, vwin = windows[seg]  # (n, blocks, D, W), (n, blocks, W, Dv)
            i0, i1 = b0 - seg.start, b1 - seg.start
            s = _scores(band, ws, qloc, kwin[h, i0:i1], h, b0, b1)  # (gb, G·qb, W)
            softmax_(s, band.may_be_empty(b0, b1), lse=False)  # P in place; 0 rows: empty
            if band.dropout is not None:
                s.mul_(band.dropout.keep((h, b0, 0), tuple(s.shape), s.dtype))
            torch.bmm(s, vwin[h, i0:i1], out=out[h, b0:b1])  # (gb, G·qb, Dv)
        ctx.save_for_backward(qr, kr, vr, out)
        ctx.band, ctx.dtypes = band, (q.dtype, k.dtype, v.dtype)
        b, hq = band.blocks.batch, band.blocks.q_heads
        return from_rows(band.from_local(out), b, hq).to(v.dtype)  # (B, Hq, Lq, Dv)

    @staticmethod
    def backward(ctx: Any, dout: Tensor):
        qr, kr, vr, out = ctx.saved_tensors
        band: Band = ctx.band
        hkv, qb, lk = band.blocks.kv_heads, band.qb, band.kv_len
        qloc = band.to_local(qr)  # (n, nb, G·qb, D)
        do_loc = band.to_local(to_rows(dout, hkv, out.dtype))  # (n, nb, G·qb, Dv)
        row_dot = torch.linalg.vecdot(do_loc, out).unsqueeze(-1)  # (n, nb, G·qb, 1): dO·O
        dq = torch.empty_like(qloc) if not band.aligned else torch.empty_like(qr)
        dq_loc = dq if not band.aligned else band.to_local(dq)  # (n, nb, G·qb, D)
        ws, wdp = _workspace(band, band.width, band.width)
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
        for h, seg, b0, b1 in band.tiles():
            kwin, vwin_t, dkb, dvb = tiles[seg]  # (n, blocks, D|Dv, W), grads (n, rows, ·)
            i0, i1, gb = b0 - seg.start, b1 - seg.start, b1 - b0
            p = _scores(band, ws, qloc, kwin[h, i0:i1], h, b0, b1)  # (gb, G·qb, W)
            softmax_(p, band.may_be_empty(b0, b1), lse=False)  # P again, in place
            do = do_loc[h, b0:b1]  # (gb, G·qb, Dv)
            dp = torch.bmm(do, vwin_t[h, i0:i1], out=wdp[:gb])  # (gb, G·qb, W)
            if band.dropout is not None:
                keep = band.dropout.keep((h, b0, 0), tuple(p.shape), p.dtype)
                dvwin = torch.bmm((p * keep).transpose(1, 2), do, out=wdv[:gb])  # (gb, W, Dv)
                dp.mul_(keep)
            else:
                dvwin = torch.bmm(p.transpose(1, 2), do, out=wdv[:gb])  # (gb, W, Dv)
            ds = dp.sub_(row_dot[h, b0:b1]).mul_(p)  # dS = P ∘ (dP − D): (gb, G·qb, W)
            torch.bmm(ds, kwin[h, i0:i1].transpose(1, 2), out=dq_loc[h, b0:b1])
            dkwin = torch.bmm(ds.transpose(1, 2), qloc[h, b0:b1], out=wdk[:gb])  # (gb, W, D)
            band.add_windows(dkb[h], dkwin, seg, b0, b1)
            band.add_windows(dvb[h], dvwin, seg, b0, b1)
        for seg, (_, _, dkb, dvb) in tiles.items():
            if seg.pos0 is not None:  # a padded end: add the rows that are real keys
                a, b = max(seg.pos0, 0), min(seg.pos0 + seg.length, lk)
                if b > a:
                    dk_acc[:, a:b] += dkb[:, a - seg.pos0 : b - seg.pos0]
                    dv_acc[:, a:b] += dvb[:, a - seg.pos0 : b - seg.pos0]
        dk, dv = dk_acc[:, :lk], dv_acc[:, :lk]  # (n, Lk, D|Dv)
        b, hq = band.blocks.batch, band.blocks.q_heads
        q_dtype, k_dtype, v_dtype = ctx.dtypes
        dq_rows = (dq if band.aligned else band.from_local(dq_loc)).mul_(band.scale)
        return (
            from_rows(dq_rows, b, hq).to(q_dtype),  # (B, Hq, Lq, D)
            dk.mul_(band.scale).reshape(b, hkv, *dk.shape[1:]).to(k_dtype),  # (B, Hkv, Lk, D)
            dv.reshape(b, hkv, *dv.shape[1:]).to(v_dtype),  # (B, Hkv, Lk, Dv)
            None,
        )
