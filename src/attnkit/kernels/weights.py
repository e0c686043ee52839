"""Exact attention weights, computed block by block straight into the output tensor.

Used by the ``chunked`` kernel when ``return_weights=True``. For each block of query rows the
scores ``q kᵀ`` are written by ``bmm`` directly into the rows of the ``(B, Hq, Lq, Lk)`` weights
tensor. The block's rows are then complete, so its log-sum-exp is final at once and the rows
become ``exp(s − lse)`` in place, while they are still in cache; the same rows then multiply the
values. (The normalisation is PyTorch's fused softmax, in place.) There is a single ``q kᵀ``
pass, no second attention pass, no score tensor besides the weights themselves, and no
temporary bigger than one block. No log-sum-exp is computed: the backward pass reads the
weights, and the two extra reductions over the weights would cost about 5 % of the call.

This differs from recomputing the weights from a saved lse in a second ``q kᵀ`` pass after
an online-softmax pass (three products over the scores instead of two): when the weights
must be written anyway, writing the scores there first and normalising them while in cache
is the cheaper order.

The backward pass reads the saved weights: ``dP = dO Vᵀ (+ dW)``,
``dS = P ∘ (dP − rowsum(P ∘ dP))``, ``dQ = dS K``, ``dK = dSᵀ Q``, ``dV = Pᵀ dO`` (with
dropout, ``P`` and ``dP`` carry the regenerated keep-mask), so gradients flow through the
output and, when they are used, the weights.

Shapes (rows layout, see ``_blocks``): qs (B·Hkv, G·Lq, D) already scaled, kr (B·Hkv, Lk, D),
vr (B·Hkv, Lk, Dv) -> out (B·Hkv, G·Lq, Dv), weights (B, Hq, Lq, Lk).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from attnkit.kernels._blocks import BlockDropout, Blocks, add_bias_grad, softmax_

_BLOCK_ELEMENTS = 1 << 22  # scores per block: few large ops (a block is the weights themselves)
_MIN_ROWS = 16
_WHOLE_ELEMENTS = 1 << 28  # up to 1 GiB of float32 weights are normalised in one piece


def _tile_rows(blocks: Blocks) -> int:
    """Query rows per tile: about ``_BLOCK_ELEMENTS`` scores of one batch entry."""
    return max(_MIN_ROWS, _BLOCK_ELEMENTS // max(1, blocks.kv_len))


def _tiles(
    blocks: Blocks, n_all: int, whole: bool = False
) -> Iterator[tuple[int, int, int, int, int]]:
    """``(q0, q1, g, h0, h1)``: query block, group, and one entry ``h0 = h1 − 1`` of ``B·Hkv``.

    One batch entry at a time keeps each block of the weights contiguous (PyTorch's softmax
    can then work in place) and about ``_BLOCK_ELEMENTS`` large. With ``whole`` (one group,
    ``B·H·Lq·Lk ≤ _WHOLE_ELEMENTS``) the single tile is the whole weights tensor: three large
    operations instead of hundreds, which is what keeps the kernel fast when the cores are
    shared (each operation waits for every thread; see docs/benchmarks.md).
    """
    if whole and blocks.group == 1 and n_all * blocks.q_len * blocks.kv_len <= _WHOLE_ELEMENTS:
        yield 0, blocks.q_len, 0, 0, n_all
        return
    qb = _tile_rows(blocks)
    for q0 in range(0, blocks.q_len, qb):
        q1 = min(q0 + qb, blocks.q_len)
        for g in range(blocks.group):
            for h in range(n_all):
                yield q0, q1, g, h, h + 1


def rows_forward(
    qs: Tensor, kr: Tensor, vr: Tensor, blocks: Blocks, dropout: BlockDropout | None
) -> tuple[Tensor, Tensor]:
    """Output and the exact weights (see the module docstring for shapes)."""
    n_all, rows_all, _ = qs.shape
    lq, lk, dv = blocks.q_len, kr.shape[1], vr.shape[2]
    weights = torch.empty(
        blocks.batch, blocks.q_heads, lq, lk, dtype=qs.dtype, device=qs.device
    )  # (B, Hq, Lq, Lk)
    w3 = weights.view(n_all, rows_all, lk)  # (B·Hkv, G·Lq, Lk)
    out = torch.empty(n_all, rows_all, dv, dtype=qs.dtype, device=qs.device)
    kt = kr.transpose(1, 2)  # (B·Hkv, D, Lk)
    parts: tuple[Tensor | None, Tensor | None] = (None, None)
    current = (-1, -1)
    for q0, q1, g, h0, h1 in _tiles(blocks, n_all, whole=dropout is None):
        if (q0, q1) != current:
            parts, current = blocks.parts(q0, q1, 0, lk), (q0, q1)
        masked = parts[0] is not None or parts[1] is not None
        r0, r1 = g * lq + q0, g * lq + q1
        s = w3[h0:h1, r0:r1]  # (n, q, Lk): the weights' own rows
        torch.bmm(qs[h0:h1, r0:r1], kt[h0:h1], out=s)
        if masked:
            blocks.apply(s, parts, g, (h0, h1))
        softmax_(s, may_be_empty=masked, lse=False)  # the weights, in place
        p = s if dropout is None else s * dropout.keep((g, q0, h0), tuple(s.shape), s.dtype)
        torch.bmm(p, vr[h0:h1], out=out[h0:h1, r0:r1])  # (n, q, Dv): contiguous rows
    return out, weights


def rows_backward(
    dout: Tensor,
    dweights: Tensor | None,
    saved: tuple[Tensor, Tensor, Tensor, Tensor],
    blocks: Blocks,
    dropout: BlockDropout | None,
    dbias: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(dqs, dk, dv)`` in the rows layout; ``dbias`` is accumulated in place.

    ``saved = (qs, kr, vr, weights)``; ``dout (B·Hkv, G·Lq, Dv)``; ``dweights (B, Hq, Lq, Lk)``.
    """
    qs, kr, vr, weights = saved
    n_all, rows_all, _ = qs.shape
    lq, lk = blocks.q_len, kr.shape[1]
    w3 = weights.view(n_all, rows_all, lk)  # (B·Hkv, G·Lq, Lk)
    dw3 = None if dweights is None else dweights.reshape(n_all, rows_all, lk)
    dqs, dk, dv = torch.empty_like(qs), torch.zeros_like(kr), torch.zeros_like(vr)
    vt = vr.transpose(1, 2)  # (B·Hkv, Dv, Lk)
    work = qs.new_empty(_tile_rows(blocks) * lk)  # dP of one tile, reused
    for q0, q1, g, h0, h1 in _tiles(blocks, n_all):
        r0, r1 = g * lq + q0, g * lq + q1
        p = w3[h0:h1, r0:r1]  # (n, q, Lk)
        do = dout[h0:h1, r0:r1]  # (n, q, Dv)
        dp = torch.bmm(do, vt[h0:h1], out=work[: (r1 - r0) * lk].view(1, r1 - r0, lk))
        if dropout is not None:
            keep = dropout.keep((g, q0, h0), tuple(p.shape), p.dtype)
            dv[h0:h1].baddbmm_((p * keep).transpose(1, 2), do)
            dp.mul_(keep)
        else:
            dv[h0:h1].baddbmm_(p.transpose(1, 2), do)
        if dw3 is not None:
            dp.add_(dw3[h0:h1, r0:r1].to(dp.dtype))
        row_dot = torch.linalg.vecdot(p, dp).unsqueeze(-1)  # (n, q, 1): rowsum(P ∘ dP)
        ds = dp.sub_(row_dot).mul_(p)  # (n, q, Lk)
        if dbias is not None:
            add_bias_grad(dbias, ds, blocks, g, (q0, q1, 0, lk), (h0, h1))
        torch.bmm(ds, kr[h0:h1], out=dqs[h0:h1, r0:r1])  # (n, q, D)
        dk[h0:h1].baddbmm_(ds.transpose(1, 2), qs[h0:h1, r0:r1])
    return dqs, dk, dv
