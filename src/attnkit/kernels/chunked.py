"""The ``chunked`` kernel: FlashAttention written with PyTorch tensor ops.

Forward (Dao et al. 2022; FORMULAS.md "Online softmax"): for each block of queries, walk the
blocks of keys it may see, keeping per row the running max ``m``, the running sum ``ℓ`` and the
unnormalised output ``O``: ``m' = max(m, rowmax(S_b))``, ``ℓ' = e^{m−m'} ℓ + rowsum(e^{S_b−m'})``,
``O' = e^{m−m'} O + e^{S_b−m'} V_b``; finally ``O/ℓ`` and ``lse = m + log ℓ``. Key blocks that no
query of the block can see (causal, window, key lengths) are skipped, and a block mask is built
only for blocks the constraints cut through. Extra memory: one block plus ``O(Lq)`` row state.

Backward (FlashAttention-2): an autograd function that saves only ``q, k, v, out, lse`` and
recomputes each block: ``P = exp(S − lse)``, ``dP = dO Vᵀ``, ``dS = P ∘ (dP − rowsum(dO ∘ O))``,
``dQ += dS K``, ``dK += dSᵀ Q``, ``dV += Pᵀ dO``, so training is ``O(length)`` in memory too.
Dropout regenerates each block's keep-mask from a seed (``_blocks.BlockDropout``).

With ``return_weights=True`` the exact weights are written block by block into the output
tensor (:mod:`attnkit.kernels.weights`) and the backward pass reads them.

Serves softmax over any dot-product score (``dot``, ``scaled_dot``, ``general``, ``cosine``
through the plan's ``DotForm``; gradients reach score parameters through it), bool masks,
float biases (with their gradient), causal, windows, key lengths, grouped heads, dropout.
Blocks are computed in float32 for 16-bit inputs, in float64 for float64.

Shapes: q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) -> out (B, Hq, Lq, Dv),
lse (B, Hq, Lq) float32 (None when the weights are returned), weights (B, Hq, Lq, Lk) or
None. Internally the rows layout ``(B·Hkv, G·Lq, ·)`` of ``_blocks``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnkit.kernels._blocks import BlockDropout, Blocks, compute_dtype, from_rows, to_rows
from attnkit.kernels._online import Loop, online_backward, online_forward
from attnkit.kernels.plan import AttentionPlan
from attnkit.kernels.weights import rows_backward, rows_forward

_BLOCK_ELEMENTS = 1 << 21  # scores per block across the batch (8 MiB in float32)
_KEY_BLOCK = 1024


def chunked(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Blockwise attention with ``O(length)`` memory; see the module docstring.

    Raises:
        ValueError: the plan's score is not a dot product or its normalizer is not softmax
            (the registry's capabilities keep such plans away from this kernel).
    """
    form = plan.dot_form
    if form is None or plan.normalizer_name != "softmax":
        raise ValueError(
            f"chunked kernel: needs softmax over a dot-product score, got score "
            f"{plan.score_name!r}, normalizer {plan.normalizer_name!r}"
        )
    cd = compute_dtype(q.dtype)  # transform q, k in the compute dtype, as the reference does
    qp, kp = form.prepare_q(q.to(cd)), form.prepare_k(k.to(cd))
    call = _Call(plan, form.scale)
    out, lse, weights = _ChunkedAttention.apply(qp, kp, v, plan.bias, call)
    return out, lse, weights


class _Call:
    """The per-call settings the autograd function needs (not tensors to differentiate)."""

    def __init__(self, plan: AttentionPlan, scale: float) -> None:
        self.blocks = Blocks(plan)
        self.scale = scale
        self.dropout = BlockDropout(plan.dropout_p, plan.device) if plan.dropout_p > 0 else None
        self.weights = plan.return_weights
        n_all = plan.shapes.batch * plan.shapes.kv_heads
        kb = max(16, min(plan.shapes.kv_len, _KEY_BLOCK))
        qb = max(16, min(1024, _BLOCK_ELEMENTS // (n_all * kb)))
        self.loop = Loop(self.blocks, qb, kb, self.dropout)


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, call: _Call):
        cd = compute_dtype(q.dtype)
        blocks = call.blocks
        hkv = k.shape[1]
        qs = to_rows(q, hkv, cd) * call.scale  # (B·Hkv, G·Lq, D)
        kr, vr = to_rows(k, hkv, cd), to_rows(v, hkv, cd)  # (B·Hkv, Lk, D|Dv)
        if call.weights:
            out, weights = rows_forward(qs, kr, vr, blocks, call.dropout)
            lse = None  # the backward pass reads the weights
        else:
            out, lse = online_forward(_DotScores(qs, kr, call.loop), vr, qs.shape[1], call.loop)
            weights = None
        ctx.save_for_backward(qs, kr, vr, out, lse, weights)
        ctx.call = call
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, None if bias is None else bias.dtype)
        b, hq = blocks.batch, blocks.q_heads
        out_user = from_rows(out, b, hq).to(v.dtype)  # (B, Hq, Lq, Dv)
        lse_user = None if lse is None else from_rows(lse, b, hq).to(torch.float32)  # (B, Hq, Lq)
        if lse_user is not None:
            ctx.mark_non_differentiable(lse_user)
        w_user = None if weights is None else weights.to(v.dtype)
        return out_user, lse_user, w_user

    @staticmethod
    def backward(ctx: Any, dout: Tensor | None, _dlse: Tensor | None, dweights: Tensor | None):
        qs, kr, vr, out, lse, weights = ctx.saved_tensors
        call: _Call = ctx.call
        blocks = call.blocks
        hkv = blocks.kv_heads
        dout_rows = (
            torch.zeros_like(out) if dout is None else to_rows(dout, hkv, out.dtype)
        )  # (B·Hkv, G·Lq, Dv)
        bias = blocks.plan.bias
        dbias = None
        if ctx.needs_input_grad[3] and bias is not None:
            dbias = torch.zeros(bias.shape, dtype=qs.dtype, device=qs.device)
        if weights is not None:
            dqs, dk, dv = rows_backward(
                dout_rows, dweights, (qs, kr, vr, weights), blocks, call.dropout, dbias
            )
        else:
            sb = _DotScores(qs, kr, call.loop, grads=True)
            dv = online_backward(sb, dout_rows, (vr, out, lse), call.loop, dbias=dbias)
            dqs, dk = sb.dqs, sb.dk
        b, hq = blocks.batch, blocks.q_heads
        q_dtype, k_dtype, v_dtype, bias_dtype = ctx.dtypes
        dq = from_rows(dqs.mul_(call.scale), b, hq).to(q_dtype)  # (B, Hq, Lq, D)
        dk4 = dk.reshape(b, hkv, *dk.shape[1:]).to(k_dtype)  # (B, Hkv, Lk, D)
        dv4 = dv.reshape(b, hkv, *dv.shape[1:]).to(v_dtype)  # (B, Hkv, Lk, Dv)
        return dq, dk4, dv4, None if dbias is None else dbias.to(bias_dtype), None


class _DotScores:
    """Score blocks ``qs kᵀ`` of the rows layout, and their gradients ``dqs``, ``dk``."""

    def __init__(self, qs: Tensor, kr: Tensor, loop: Loop, grads: bool = False) -> None:
        self.qs, self.kr, self.kt = qs, kr, kr.transpose(1, 2)  # kt (B·Hkv, D, Lk)
        self._work = qs.new_empty(qs.shape[0] * loop.qb * loop.kb)  # reused by every block
        if grads:
            self.dqs, self.dk = torch.zeros_like(qs), torch.zeros_like(kr)

    def scores(self, r0: int, r1: int, k0: int, k1: int) -> Tensor:
        n = self.qs.shape[0]
        out = self._work[: n * (r1 - r0) * (k1 - k0)].view(n, r1 - r0, k1 - k0)
        return torch.bmm(self.qs[:, r0:r1], self.kt[:, :, k0:k1], out=out)  # (B·Hkv, q, k)

    def backward(self, ds: Tensor, r0: int, r1: int, k0: int, k1: int) -> None:
        self.dqs[:, r0:r1].baddbmm_(ds, self.kr[:, k0:k1])
        self.dk[:, k0:k1].baddbmm_(ds.transpose(1, 2), self.qs[:, r0:r1])
