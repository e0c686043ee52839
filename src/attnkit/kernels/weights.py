"""Exact attention weights, computed tile by tile straight into the output tensor.

Used by the ``chunked`` kernel when ``return_weights=True``. A tile is a block of query rows
over **every** key: the scores ``q kᵀ`` are written by ``bmm`` directly into those rows of the
``(B, Hq, Lq, Lk)`` weights tensor; the rows are then complete, so :func:`online.attend_`
normalises them in place while they are still in cache (a single tile per row: no merging,
no log-sum-exp) and multiplies them with the values. There is one ``q kᵀ`` pass, no score
tensor besides the weights themselves, and no temporary bigger than one tile.

This differs from recomputing the weights from a saved lse in a second ``q kᵀ`` pass after
an online-softmax pass (three products over the scores instead of two): when the weights
must be written anyway, writing the scores there first and normalising them while in cache
is the cheaper order.

The backward pass reads the saved weights as ``P`` (:func:`online.tile_grads` with
``D = rowsum(P ∘ dP)``), so gradients flow through the output and, when they are used, the
weights.

Shapes (rows layout, see :mod:`online`): qr (n, G·Lq, D) unscaled (the products apply
``scale``), kr (n, Lk, D), vr (n, Lk, Dv) -> out (n, G·Lq, Dv), weights (B, Hq, Lq, Lk).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from attnkit.kernels.online import attend_, tile_grads
from attnkit.kernels.tiling import Tiling

_BLOCK_ELEMENTS = 1 << 22  # scores per tile: few large ops (a tile is the weights themselves)
_MIN_ROWS = 16
_WHOLE_ELEMENTS = 1 << 28  # up to 1 GiB of float32 weights are normalised in one piece


def _tile_rows(kv_len: int) -> int:
    """Query rows per tile: about ``_BLOCK_ELEMENTS`` scores of one batch entry."""
    return max(_MIN_ROWS, _BLOCK_ELEMENTS // max(1, kv_len))


def _tiles(
    tiling: Tiling, n: int, whole: bool = False
) -> Iterator[tuple[int, int, int, int | None]]:
    """``(q0, q1, g, entry)``: query block, group, and one entry of ``B·Hkv`` (``None``: all).

    One batch entry at a time keeps each tile of the weights contiguous (PyTorch's softmax can
    then work in place) and about ``_BLOCK_ELEMENTS`` large. With ``whole`` (one group,
    ``B·H·Lq·Lk ≤ _WHOLE_ELEMENTS``) the single tile is the whole weights tensor: three large
    operations instead of hundreds, which is what keeps the kernel fast when the cores are
    shared (each operation waits for every thread; see docs/benchmarks.md).
    """
    lq, lk = tiling.vis.q_len, tiling.vis.kv_len
    if whole and tiling.group == 1 and n * lq * lk <= _WHOLE_ELEMENTS:
        yield 0, lq, 0, None
        return
    qb = _tile_rows(lk)
    for q0 in range(0, lq, qb):
        for g in range(tiling.group):
            for entry in range(n):
                yield q0, min(q0 + qb, lq), g, entry


def rows_forward(
    qr: Tensor, kr: Tensor, vr: Tensor, tiling: Tiling, w3: Tensor, scale: float,
    lse: Tensor | None = None,
) -> Tensor:
    """The output; ``w3 (n, G·Lq, Lk)`` is filled with the exact weights of the scores
    ``scale · q kᵀ``, and ``lse (n, G·Lq)``, when given, with each row's log-sum-exp
    (``−inf`` for a row that sees no key)."""
    n, rows_all, _ = qr.shape
    lq, lk = tiling.vis.q_len, kr.shape[1]
    out = torch.empty(n, rows_all, vr.shape[2], dtype=qr.dtype, device=qr.device)
    kt = kr.transpose(1, 2)  # (n, D, Lk)
    tile, current, dropout = None, (-1, -1), tiling.dropout
    for q0, q1, g, entry in _tiles(tiling, n, whole=dropout is None):
        if (q0, q1) != current:
            tile, current = tiling.vis.tile(q0, q1, 0, lk), (q0, q1)
        e0, e1 = (0, n) if entry is None else (entry, entry + 1)
        r0, r1 = g * lq + q0, g * lq + q1
        s = w3[e0:e1, r0:r1]  # (n|1, q, Lk): the weights' own rows
        lse_rows = None if lse is None else lse[e0:e1, r0:r1]  # (n|1, q)
        if tile is None:  # no query of the block sees a key
            s.zero_()
            out[e0:e1, r0:r1].zero_()
            if lse_rows is not None:
                lse_rows.fill_(float("-inf"))
            continue
        if tile.full:
            torch.baddbmm(s, qr[e0:e1, r0:r1], kt[e0:e1], beta=0.0, alpha=scale, out=s)
        else:  # the tile's mask and bias added by the matmul
            add = tiling.additive(tile, g, s.dtype, entry).expand(s.shape)
            torch.baddbmm(add, qr[e0:e1, r0:r1], kt[e0:e1], alpha=scale, out=s)
        keep = None if dropout is None else dropout.keep((g, q0, e0), s.shape, s.dtype)
        attend_(s, vr[e0:e1], out[e0:e1, r0:r1], lse_rows, first=True,
                may_be_empty=not (tile.full or tiling.vis.every_query_sees_a_key), keep=keep)
    return out


def rows_backward(
    dout: Tensor,
    dweights: Tensor | None,
    saved: tuple[Tensor, Tensor, Tensor, Tensor],
    tiling: Tiling,
    dbias: Tensor | None,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(dq, dk, dv)`` in the rows layout; ``dbias`` is accumulated in place.

    ``saved = (qr, kr, vr, w3)``: ``qr`` unscaled, as :func:`rows_forward` took it, and the
    weights ``w3 (n, G·Lq, Lk)``; ``dout (n, G·Lq, Dv)``; ``dweights (B, Hq, Lq, Lk)``.
    """
    qr, kr, vr, w3 = saved
    n, rows_all, _ = qr.shape
    lk = kr.shape[1]
    dw3 = None if dweights is None else dweights.reshape(n, rows_all, lk).to(qr.dtype)
    dq, dk, dv = torch.empty_like(qr), torch.zeros_like(kr), torch.zeros_like(vr)
    vt = vr.transpose(1, 2)  # (n, Dv, Lk)
    work = qr.new_empty(_tile_rows(lk) * lk)  # dP of one tile, reused
    dropout = tiling.dropout
    for q0, q1, g, entry in _tiles(tiling, n):  # one entry of B·Hkv at a time here
        e, (r0, r1) = slice(entry, entry + 1), tiling.rows(g, q0, q1)  # type: ignore[operator]
        p = w3[e, r0:r1]  # (1, q, Lk)
        keep = None if dropout is None else dropout.keep((g, q0, entry), p.shape, p.dtype)
        ds = tile_grads(
            p, dout[e, r0:r1], vt[e], dv[e], row_dot=None, keep=keep,
            dw=None if dw3 is None else dw3[e, r0:r1], work=work[: p.numel()].view(p.shape),
        )  # (1, q, Lk)
        if dbias is not None:
            tiling.add_bias_grad(dbias, ds, g, (q0, q1, 0, lk), entry)
        dq_e = dq[e, r0:r1]  # (1, q, D)
        torch.baddbmm(dq_e, ds, kr[e], beta=0.0, alpha=scale, out=dq_e)
        dk[e].baddbmm_(ds.transpose(1, 2), qr[e, r0:r1], alpha=scale)
    return dq, dk, dv
