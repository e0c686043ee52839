"""The online-softmax block loops shared by ``chunked`` (dot scores) and ``additive``.

A kernel supplies a :class:`ScoreBlocks`: how to compute one block of scores and how to send
a block's score gradient back to its own inputs. This module does the rest (FORMULAS.md,
"Online softmax"; Dao et al. 2022, FlashAttention-2's backward):

forward, per query block, over the key blocks it may see: each block is normalised on its
own by PyTorch's fused softmax (``P_b``, with its log-sum-exp ``lse_b``) and merged into the
running result (FORMULAS.md, "Merging two partial results")::

    lse' = log(e^{lse} + e^{lse_b});  O' = e^{lse − lse'} O + e^{lse_b − lse'} P_b V_b

This is the online softmax ``m' = max(m, rowmax S_b)``, ``ℓ' = e^{m−m'} ℓ + rowsum e^{S_b−m'}``
with the per-block exponentials done by the fused softmax, which on CPU is several times
cheaper than ``exp`` itself.

backward, recomputing each block: ``P = exp(S − lse)``, ``dP = dO Vᵀ (+ dW)``,
``dS = P ∘ (dP − D)`` with ``D = rowsum(dO ∘ O) (+ rowsum(W ∘ dW))``, ``dV += Pᵀ dO`` and the
score gradient ``dS`` handed to the :class:`ScoreBlocks`.

Exact weights from the lse: ``W = exp(S − lse)``, block by block into the output tensor.

Shapes (rows layout of ``_blocks``): vr (B·Hkv, Lk, Dv), out (B·Hkv, G·Lq, Dv),
lse (B·Hkv, G·Lq), scores of a block (B·Hkv, q, k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from attnkit.kernels._blocks import NEG_INF, BlockDropout, Blocks, add_bias_grad, softmax_


class ScoreBlocks(Protocol):
    def scores(self, r0: int, r1: int, k0: int, k1: int) -> Tensor:
        """A fresh ``(B·Hkv, r1-r0, k1-k0)`` tensor of scores (before bias and mask)."""
        ...

    def backward(self, ds: Tensor, r0: int, r1: int, k0: int, k1: int) -> None:
        """Accumulate the gradient of the block's score inputs from ``ds``."""
        ...


@dataclass
class Loop:
    """Block sizes and per-call state of an online-softmax loop."""

    blocks: Blocks
    qb: int
    kb: int
    dropout: BlockDropout | None


def _tiles(loop: Loop):
    """``(q0, q1, key_blocks)`` for every query block, skipping keys no query may see."""
    for q0 in range(0, loop.blocks.q_len, loop.qb):
        q1 = min(q0 + loop.qb, loop.blocks.q_len)
        lo, hi = loop.blocks.span(q0, q1)
        yield q0, q1, [(k0, min(k0 + loop.kb, hi)) for k0 in range(lo, hi, loop.kb)]


def _masked_scores(sb: ScoreBlocks, loop: Loop, part, g: int, box) -> Tensor:
    q0, q1, k0, k1 = box
    lq = loop.blocks.q_len
    s = sb.scores(g * lq + q0, g * lq + q1, k0, k1)  # (B·Hkv, q, k)
    if part[0] is not None or part[1] is not None:
        loop.blocks.apply(s, part, g)
    return s


def online_forward(sb: ScoreBlocks, vr: Tensor, rows_all: int, loop: Loop) -> tuple[Tensor, Tensor]:
    """``out (B·Hkv, G·Lq, Dv)`` and ``lse (B·Hkv, G·Lq)`` (``-inf`` for empty rows)."""
    blocks, dropout = loop.blocks, loop.dropout
    n_all, lq = vr.shape[0], blocks.q_len
    out = torch.zeros(n_all, rows_all, vr.shape[2], dtype=vr.dtype, device=vr.device)
    lse = torch.full((n_all, rows_all), NEG_INF, dtype=vr.dtype, device=vr.device)
    for q0, q1, key_blocks in _tiles(loop):
        parts = [blocks.parts(q0, q1, k0, k1) for k0, k1 in key_blocks]
        for g in range(blocks.group):
            r0, r1 = g * lq + q0, g * lq + q1
            acc = out[:, r0:r1]  # (B·Hkv, q, Dv)
            run = torch.full((n_all, r1 - r0, 1), NEG_INF, dtype=vr.dtype, device=vr.device)
            for i, ((k0, k1), part) in enumerate(zip(key_blocks, parts, strict=True)):
                s = _masked_scores(sb, loop, part, g, (q0, q1, k0, k1))  # (B·Hkv, q, k)
                masked = part[0] is not None or part[1] is not None
                lse_b = softmax_(s, may_be_empty=masked)  # block-normalised P_b, in place
                if dropout is not None:
                    s.mul_(dropout.keep((g, q0, k0), tuple(s.shape), s.dtype))
                if i == 0:
                    torch.bmm(s, vr[:, k0:k1], out=acc)
                    run = lse_b
                    continue
                o_b = torch.bmm(s, vr[:, k0:k1])  # (B·Hkv, q, Dv)
                new = torch.logaddexp(run, lse_b)  # (B·Hkv, q, 1)
                safe = new.masked_fill(new == NEG_INF, 0.0)
                acc.mul_((run - safe).exp_()).add_(o_b.mul_((lse_b - safe).exp_()))
                run = new
            lse[:, r0:r1] = run.squeeze(-1)  # -inf for empty rows
    return out, lse


def weights_from_lse(sb: ScoreBlocks, lse: Tensor, loop: Loop) -> Tensor:
    """Exact weights ``exp(S − lse)`` ``(B, Hq, Lq, Lk)``, each block written in place."""
    blocks = loop.blocks
    lq, lk = blocks.q_len, blocks.kv_len
    weights = torch.zeros(
        blocks.batch, blocks.q_heads, lq, lk, dtype=lse.dtype, device=lse.device
    )  # (B, Hq, Lq, Lk)
    w3 = weights.view(lse.shape[0], lse.shape[1], lk)  # (B·Hkv, G·Lq, Lk)
    lse_safe = lse.masked_fill(lse == NEG_INF, 0.0).unsqueeze(-1)  # (B·Hkv, G·Lq, 1)
    for q0, q1, key_blocks in _tiles(loop):
        for k0, k1 in key_blocks:
            part = blocks.parts(q0, q1, k0, k1)
            for g in range(blocks.group):
                r0, r1 = g * lq + q0, g * lq + q1
                s = _masked_scores(sb, loop, part, g, (q0, q1, k0, k1))
                torch.exp(s.sub_(lse_safe[:, r0:r1]), out=s)
                w3[:, r0:r1, k0:k1] = s
    return weights


def online_backward(
    sb: ScoreBlocks,
    dout: Tensor,
    saved: tuple[Tensor, Tensor, Tensor],
    loop: Loop,
    weights: tuple[Tensor, Tensor] | None = None,
    dbias: Tensor | None = None,
) -> Tensor:
    """Recomputing backward. Returns ``dv (B·Hkv, Lk, Dv)``; score gradients go to ``sb``.

    ``saved = (vr, out, lse)``; ``weights = (W, dW)`` (both ``(B, Hq, Lq, Lk)``) when the
    returned weights received a gradient; ``dbias`` is accumulated in place.
    """
    vr, out, lse = saved
    blocks, dropout = loop.blocks, loop.dropout
    lq = blocks.q_len
    row_dot = (dout * out).sum(dim=-1, keepdim=True)  # (B·Hkv, G·Lq, 1): rowsum(dO ∘ O)
    dw3 = None
    if weights is not None:
        w, dw = weights
        w3 = w.reshape(lse.shape[0], lse.shape[1], -1)  # (B·Hkv, G·Lq, Lk)
        dw3 = dw.reshape(w3.shape).to(w3.dtype)
        row_dot = row_dot + (w3 * dw3).sum(dim=-1, keepdim=True)
    lse_safe = lse.masked_fill(lse == NEG_INF, 0.0).unsqueeze(-1)  # (B·Hkv, G·Lq, 1)
    dv = torch.zeros_like(vr)
    vt = vr.transpose(1, 2)  # (B·Hkv, Dv, Lk)
    work = vr.new_empty(vr.shape[0] * loop.qb * loop.kb)  # dP of one block, reused
    for q0, q1, key_blocks in _tiles(loop):
        for k0, k1 in key_blocks:
            part = blocks.parts(q0, q1, k0, k1)
            for g in range(blocks.group):
                r0, r1 = g * lq + q0, g * lq + q1
                do = dout[:, r0:r1]  # (B·Hkv, q, Dv)
                s = _masked_scores(sb, loop, part, g, (q0, q1, k0, k1))
                p = s.sub_(lse_safe[:, r0:r1]).exp_()  # P; 0 where masked
                shape = (vr.shape[0], r1 - r0, k1 - k0)
                dp = torch.bmm(do, vt[:, :, k0:k1], out=work[: math.prod(shape)].view(shape))
                if dropout is not None:
                    keep = dropout.keep((g, q0, k0), tuple(p.shape), p.dtype)
                    dv[:, k0:k1].baddbmm_((p * keep).transpose(1, 2), do)
                    dp.mul_(keep)
                else:
                    dv[:, k0:k1].baddbmm_(p.transpose(1, 2), do)
                if dw3 is not None:
                    dp.add_(dw3[:, r0:r1, k0:k1])
                ds = dp.sub_(row_dot[:, r0:r1]).mul_(p)  # dS = P ∘ (dP − D)
                if dbias is not None:
                    add_bias_grad(dbias, ds, blocks, g, (q0, q1, k0, k1))
                sb.backward(ds, r0, r1, k0, k1)
    return dv
