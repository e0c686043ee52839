"""The ``local`` kernel: banded attention for ``window=(left, right)``, with or without causal.

Queries are cut into blocks whose overlapping key windows are ``unfold`` views of the keys,
so cost and memory grow with ``length × window``, not ``length²``: the windows, their masks and
the local layout are :class:`~attnkit.kernels.band.Band`'s.

Within a window the whole row of a query is present, so the softmax is exact in one step.
The forward pass hands a group of blocks (queries, key and value windows, all views) to
PyTorch's fused ``scaled_dot_product_attention``, whose CPU flash kernel makes each block's
scores, softmax and product in one loop (about 10 % less time than a ``baddbmm``, PyTorch's
softmax and a ``bmm`` over the same windows, N = 16384, one thread); with dropout it runs
those three itself (:func:`online.attend_` with no merging), since the backward pass must
regenerate the keep-mask.

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

from typing import Any

import torch
from torch import Tensor

from attnkit.kernels import online, ops
from attnkit.kernels.band import Band, block_size
from attnkit.kernels.online import compute_dtype, from_rows, to_rows
from attnkit.kernels.plan import AttentionPlan
from attnkit.kernels.registry import FLOATS, SOFTMAX, Capabilities, Kernel
from attnkit.kernels.tile_scores import flash_fuses
from attnkit.kernels.visibility import NEG_INF


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
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``dq (B, Hq, Lq, D)``, ``dk (B, Hkv, Lk, D)``, ``dv (B, Hkv, Lk, Dv)`` in the compute
    dtype and the sinks' gradient ``(B, Hq, Lq)`` (``None`` without ``sink_grad``), from
    ``saved = (qr, kr, vr, out)`` (``out`` in the local layout) or, with sinks,
    ``(qr, kr, vr, out', lse', sink)`` as :func:`_forward` left them: each window's weights
    are then recomputed as ``P' = exp(S − lse')`` (the share the sink took left out) and the
    sinks' gradient is :func:`online.sink_grad`'s."""
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
    dsink = None
    if sink_grad:
        assert lse is not None and sink is not None
        dsink = _row_user(band, online.sink_grad(do_loc, out, lse, sink, row_dot))  # (B, Hq, Lq)
    return (
        from_rows(dq_rows, b, hq),  # (B, Hq, Lq, D)
        dk.mul_(band.scale).reshape(b, hkv, *dk.shape[1:]),  # (B, Hkv, Lk, D)
        dv.reshape(b, hkv, *dv.shape[1:]),  # (B, Hkv, Lk, Dv)
        dsink,
    )


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
        dq, dk, dv, dsinks = _backward(ctx.band, ctx.saved_tensors, dout,
                                       sink_grad=ctx.needs_input_grad[3])
        q_dtype, k_dtype, v_dtype, s_dtype = ctx.dtypes
        return (dq.to(q_dtype), dk.to(k_dtype), dv.to(v_dtype),
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
    dq, dk, dv, dsinks = _backward(band, (*_rows(band, *inputs), out, *sinks), dout,
                                   sink_grad=sink_grad and plan.sinks is not None)
    # no bias gradient (refused); the placeholders are two tensors (no two returns may be one)
    return [dq, dk, dv, ops.empty(dq), ops.empty(dq) if dsinks is None else dsinks]


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
