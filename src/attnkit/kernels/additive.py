"""The ``additive`` kernel: Bahdanau/concat scores in blocks, with the online softmax.

``score(q, k) = scale · vᵀ tanh(W q + U k [+ b])`` (Bahdanau et al. 2015; ``concat`` is the same
with ``[W, U]`` one matrix, Luong et al. 2015). The projections ``W q`` and ``U k`` are computed
once (autograd differentiates them); the kernel then walks blocks of queries and keys, forming
``tanh(Wq_i + Uk_j)`` only for one ``(q, k, A)`` block at a time. Memory is bounded by a block
instead of the naive ``(B, H, Lq, Lk, A)``. The softmax is the online one of ``_online``, so
the ``(Lq, Lk)`` scores are not materialised either. ``tanh`` is computed as ``2σ(2x) − 1``
(PyTorch's sigmoid is several times faster than its tanh on CPU).

Backward: an autograd function recomputing each block. With ``dS`` the score gradient and
``t = tanh(Wq_i + Uk_j)``: ``dv_score += Σ scale·dS·t``, ``d(Wq)_i += Σ_j scale·dS·v ∘ (1 − t²)``,
``d(Uk)_j += Σ_i (same)``; gradients of ``W``, ``U``, ``b``, ``q``, ``k`` follow by autograd.

``return_weights=True``: the exact weights ``exp(S − lse)`` are recomputed from the saved
log-sum-exp, block by block straight into the output tensor.

Shapes: q (B, Hq, Lq, Dq), k (B, Hkv, Lk, Dk), v (B, Hkv, Lk, Dv); score parameters
``w_q (A, Dq)``, ``w_k (A, Dk)``, ``v (A,)``, ``bias (A,)`` (``concat``: ``weight (A, Dq + Dk)``,
``v (A,)``) -> out (B, Hq, Lq, Dv), lse (B, Hq, Lq) float32, weights (B, Hq, Lq, Lk) or None.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnkit.kernels._blocks import BlockDropout, Blocks, compute_dtype, from_rows, to_rows
from attnkit.kernels._online import Loop, online_backward, online_forward, weights_from_lse
from attnkit.kernels.plan import AttentionPlan

_BLOCK_ELEMENTS = 1 << 21  # elements of one (q, k, A) tanh block across the batch (8 MiB)


def additive(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Blockwise additive attention; see the module docstring.

    Raises:
        ValueError: the score is not ``additive``/``concat`` or the normalizer is not softmax
            (the registry's capabilities keep such plans away from this kernel).
    """
    if plan.score_name not in ("additive", "concat") or plan.normalizer_name != "softmax":
        raise ValueError(
            f"additive kernel: needs softmax over the additive or concat score, got score "
            f"{plan.score_name!r}, normalizer {plan.normalizer_name!r}"
        )
    w_q, w_k, bias, vec = _parameters(plan, q.shape[-1])
    cd = compute_dtype(q.dtype)  # project in the compute dtype, as the reference does
    qa = torch.matmul(q.to(cd), w_q.to(cd).transpose(0, 1))  # (B, Hq, Lq, A)
    if bias is not None:
        qa = qa + bias.to(cd)
    ka = torch.matmul(k.to(cd), w_k.to(cd).transpose(0, 1))  # (B, Hkv, Lk, A)
    call = _Call(plan, qa.shape[-1])
    out, lse, weights = _AdditiveAttention.apply(qa, ka, vec, v, plan.bias, call)
    return out, lse, weights


def _parameters(plan: AttentionPlan, dq: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """``(W (A, Dq), U (A, Dk), b (A,) or None, v (A,))`` of the additive or concat score."""
    params = plan.score_params
    if plan.score_name == "concat":
        weight = params["weight"]
        return weight[:, :dq], weight[:, dq:], None, params["v"]
    return params["w_q"], params["w_k"], params.get("bias"), params["v"]


class _Call:
    def __init__(self, plan: AttentionPlan, width: int) -> None:
        s = plan.shapes
        self.blocks = Blocks(plan)
        self.scale = plan.scale
        self.weights = plan.return_weights
        dropout = BlockDropout(plan.dropout_p, plan.device) if plan.dropout_p > 0 else None
        n_all = s.batch * s.kv_heads
        pairs = max(1, _BLOCK_ELEMENTS // (n_all * width))  # q·k pairs per block
        kb = max(1, min(s.kv_len, 64, pairs // 16))
        qb = max(1, min(s.q_len, pairs // kb))
        self.loop = Loop(self.blocks, qb, kb, dropout)


class _AdditiveScores:
    """Score blocks ``scale · vᵀ tanh(qa_i + ka_j)`` of the rows layout, and their gradients.

    ``tanh(x) = 2σ(2x) − 1``, and PyTorch's sigmoid is several times faster than its tanh on
    CPU, so a block is ``σ = sigmoid(2qa_i + 2ka_j)`` (the doubled projections are made once)
    and ``s = scale · (2 σ·v − Σv)``: the affine part touches only the ``(q, k)`` scores.
    The derivative is ``1 − tanh² = 4σ(1 − σ)``.
    """

    def __init__(
        self, qa: Tensor, ka: Tensor, vec: Tensor, scale: float, loop: Loop, grads: bool = False
    ):
        self.qa2, self.ka2 = qa * 2.0, ka * 2.0  # (n, G·Lq | Lk, A)
        self.vec, self.scale = vec, scale
        self.shift = scale * float(vec.sum())  # scale · Σv
        self._sig: Tensor | None = None
        # One reused buffer for the (n, q, k, A) block: tiles never touch fresh memory.
        self._work = qa.new_empty(qa.shape[0] * loop.qb * loop.kb * qa.shape[-1])
        if grads:
            self.dqa, self.dka = torch.zeros_like(qa), torch.zeros_like(ka)
            self.dvec = torch.zeros_like(vec)

    def scores(self, r0: int, r1: int, k0: int, k1: int) -> Tensor:
        n, width = self.qa2.shape[0], self.qa2.shape[-1]
        hidden = self._work[: n * (r1 - r0) * (k1 - k0) * width].view(n, r1 - r0, k1 - k0, width)
        torch.add(self.qa2[:, r0:r1].unsqueeze(2), self.ka2[:, k0:k1].unsqueeze(1), out=hidden)
        sig = hidden.sigmoid_()  # σ(2x), x = qa + ka: (n, q, k, A)
        self._sig = sig
        s = torch.matmul(sig, self.vec)  # (n, q, k)
        return s.mul_(2.0 * self.scale).sub_(self.shift)

    def backward(self, ds: Tensor, r0: int, r1: int, k0: int, k1: int) -> None:
        sig = self._sig  # the block just recomputed by scores()
        if sig is None or sig.shape[1:3] != ds.shape[1:]:
            raise RuntimeError("additive kernel: backward block does not match the scores")
        self._sig = None
        dsc = ds.mul_(self.scale) if self.scale != 1.0 else ds  # (n, q, k): d(vᵀ tanh x)
        width = sig.shape[-1]
        # d v = Σ dsc · tanh x = 2 Σ dsc·σ − Σ dsc
        self.dvec += torch.matmul(dsc.reshape(1, -1), sig.reshape(-1, width)).squeeze(0) * 2.0
        self.dvec -= dsc.sum()
        dh = sig.sub_(0.5).square_().neg_().add_(0.25)  # σ(1 − σ), in place
        dh.mul_(dsc.unsqueeze(-1)).mul_(self.vec * 4.0)  # (n, q, k, A): d x = dsc·v·4σ(1−σ)
        self.dqa[:, r0:r1] += dh.sum(dim=2)
        self.dka[:, k0:k1] += dh.sum(dim=1)


class _AdditiveAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, qa: Tensor, ka: Tensor, vec: Tensor, v: Tensor, bias: Tensor | None, call: _Call
    ):
        cd = compute_dtype(qa.dtype)
        blocks = call.blocks
        hkv = ka.shape[1]
        qr, kr = to_rows(qa, hkv, cd), to_rows(ka, hkv, cd)  # (B·Hkv, G·Lq | Lk, A)
        vr, vc = to_rows(v, hkv, cd), vec.to(cd)  # (B·Hkv, Lk, Dv), (A,)
        sb = _AdditiveScores(qr, kr, vc, call.scale, call.loop)
        out, lse = online_forward(sb, vr, qr.shape[1], call.loop)
        weights = weights_from_lse(sb, lse, call.loop) if call.weights else None
        ctx.save_for_backward(qr, kr, vc, vr, out, lse, weights)
        ctx.call = call
        ctx.dtypes = (qa.dtype, ka.dtype, vec.dtype, v.dtype, None if bias is None else bias.dtype)
        b, hq = blocks.batch, blocks.q_heads
        out_user = from_rows(out, b, hq).to(v.dtype)  # (B, Hq, Lq, Dv)
        lse_user = from_rows(lse, b, hq).float()  # (B, Hq, Lq)
        ctx.mark_non_differentiable(lse_user)
        return out_user, lse_user, None if weights is None else weights.to(v.dtype)

    @staticmethod
    def backward(ctx: Any, dout: Tensor | None, _dlse: Tensor | None, dweights: Tensor | None):
        qr, kr, vc, vr, out, lse, weights = ctx.saved_tensors
        call: _Call = ctx.call
        blocks = call.blocks
        hkv, b, hq = blocks.kv_heads, blocks.batch, blocks.q_heads
        dout_rows = torch.zeros_like(out) if dout is None else to_rows(dout, hkv, out.dtype)
        bias = blocks.plan.bias
        dbias = None
        if ctx.needs_input_grad[4] and bias is not None:
            dbias = torch.zeros(bias.shape, dtype=qr.dtype, device=qr.device)
        sb = _AdditiveScores(qr, kr, vc, call.scale, call.loop, grads=True)
        pair = None if weights is None or dweights is None else (weights, dweights)
        dv = online_backward(sb, dout_rows, (vr, out, lse), call.loop, pair, dbias)
        qa_t, ka_t, vec_t, v_t, bias_t = ctx.dtypes
        return (
            from_rows(sb.dqa, b, hq).to(qa_t),  # (B, Hq, Lq, A)
            sb.dka.reshape(b, hkv, *sb.dka.shape[1:]).to(ka_t),  # (B, Hkv, Lk, A)
            sb.dvec.to(vec_t),
            dv.reshape(b, hkv, *dv.shape[1:]).to(v_t),  # (B, Hkv, Lk, Dv)
            None if dbias is None else dbias.to(bias_t),
            None,
        )
