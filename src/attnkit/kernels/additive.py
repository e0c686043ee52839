"""The ``additive`` kernel: Bahdanau/concat scores in blocks, with the online softmax.

``score(q, k) = scale · vᵀ tanh(W q + U k [+ b])`` (Bahdanau et al. 2015; ``concat`` is the same
with ``[W, U]`` one matrix, Luong et al. 2015). The projections ``W q`` and ``U k`` are computed
once (autograd differentiates them); the kernel then walks blocks of queries and keys, forming
``tanh(Wq_i + Uk_j)`` only for one ``(q, k, A)`` block at a time. Memory is bounded by a block
instead of the naive ``(B, H, Lq, Lk, A)``. The softmax is the online one of :mod:`online`,
so the ``(Lq, Lk)`` scores are not materialised either; a ``score_mod`` applies to each tile.
``tanh`` is computed as ``2σ(2x) − 1`` (PyTorch's sigmoid is several times faster than its
tanh on CPU).

Backward: an autograd function recomputing each block. With ``dS`` the score gradient and
``t = tanh(Wq_i + Uk_j)``: ``dv_score += Σ scale·dS·t``, ``d(Wq)_i += Σ_j scale·dS·v ∘ (1 − t²)``,
``d(Uk)_j += Σ_i (same)``; gradients of ``W``, ``U``, ``b``, ``q``, ``k`` follow by autograd.

``return_weights=True``: the exact weights ``exp(S − lse)`` are recomputed from the saved
log-sum-exp, block by block straight into the output tensor; a summary of them
(``plan.summary``) is reduced from the same second pass, block by block, without them.

Shapes: q (B, Hq, Lq, Dq), k (B, Hkv, Lk, Dk), v (B, Hkv, Lk, Dv); score parameters
``w_q (A, Dq)``, ``w_k (A, Dk)``, ``v (A,)``, ``bias (A,)`` (``concat``: ``weight (A, Dq + Dk)``,
``v (A,)``) -> out (B, Hq, Lq, Dv), lse (B, Hq, Lq) float32, weights (B, Hq, Lq, Lk) or None.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnkit.kernels import online, ops, summaries
from attnkit.kernels.online import compute_dtype, from_rows, to_rows
from attnkit.kernels.plan import AttentionPlan
from attnkit.kernels.registry import FLOATS, SOFTMAX, Capabilities, Kernel
from attnkit.kernels.tile_scores import ModScores, modded
from attnkit.kernels.tiling import ALL, Tiling, dropout_for

_BLOCK_ELEMENTS = 1 << 21  # elements of one (q, k, A) tanh block across the batch (8 MiB)
# Under auto: with this few queries per key/value head the tile loop cannot amortise its
# bookkeeping, and the reference's materialised (B, Hq, Lq, Lk, A) stays small (measured:
# B=32, Lq=1, Lk 16..64, D=A 128..512 trains 1.4-2.5x slower with `additive` than `reference`).
FEW_QUERIES = 4
SMALL_HIDDEN = 1 << 23  # elements of the reference's tanh tensor (32 MiB in float32)


def additive(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Blockwise additive attention; see the module docstring."""
    form = plan.score.additive
    assert form is not None  # guaranteed by the capabilities (additive/concat scores)
    cd = compute_dtype(q.dtype)  # project in the compute dtype, as the reference does
    qa = torch.matmul(q.to(cd), form.w_q.to(cd).transpose(0, 1))  # (B, Hq, Lq, A)
    if form.bias is not None:
        qa = qa + form.bias.to(cd)
    ka = torch.matmul(k.to(cd), form.w_k.to(cd).transpose(0, 1))  # (B, Hkv, Lk, A)
    if torch.compiler.is_compiling():  # one opaque operator (see kernels/ops.py)
        return ops.run("additive", [qa, ka, form.v, v], plan, plan.score.scale, need_lse=True)
    call = _Call(plan, qa.shape[-1])
    bias = plan.visibility.bias
    out, lse, *rest = _AdditiveAttention.apply(qa, ka, form.v, v, bias, call,
                                               *plan.score.mod_leaves)
    return out, lse, rest[0] if len(rest) == 1 else tuple(rest)


def _declines(plan: AttentionPlan) -> str | None:
    s, form = plan.shapes, plan.score.additive
    assert form is not None
    hidden = s.batch * s.q_heads * s.q_len * s.kv_len * int(form.v.shape[0])
    queries = s.group * s.q_len
    if queries <= FEW_QUERIES and hidden <= SMALL_HIDDEN:
        return (
            f"{queries} quer{'y' if queries == 1 else 'ies'} per key/value head "
            f"(<= {FEW_QUERIES}) and a {hidden * 4 / 2**20:.1f} MiB naive tanh tensor "
            f"(<= {SMALL_HIDDEN * 4 >> 20} MiB): reference is faster"
        )
    return None


class _Call:
    def __init__(self, plan: AttentionPlan, width: int) -> None:
        s = plan.shapes
        self.plan, self.scale, self.weights = plan, plan.score.scale, plan.return_weights
        pairs = max(1, _BLOCK_ELEMENTS // (s.batch * s.kv_heads * width))  # q·k pairs per tile
        kb = max(1, min(s.kv_len, 64, pairs // 16))
        qb = max(1, min(s.q_len, pairs // kb))
        dropout = dropout_for(plan)
        self.tiling = Tiling(plan.visibility, s.kv_heads, qb, kb, compute_dtype(plan.dtype),
                             dropout)

    def scores(self, qa: Tensor, ka: Tensor, vec: Tensor, grads: bool = False):
        tiles = _AdditiveScores(qa, ka, vec, self.scale, self.tiling, grads)
        return modded(tiles, self.plan.score, self.tiling, grads)


class _AdditiveScores:
    """Score tiles ``scale · vᵀ tanh(qa_i + ka_j)`` of the rows layout, and their gradients.

    ``tanh(x) = 2σ(2x) − 1``, and PyTorch's sigmoid is several times faster than its tanh on
    CPU, so a tile is ``σ = sigmoid(2qa_i + 2ka_j)`` (the doubled projections are made once)
    and ``s = scale · (2 σ·v − Σv)``: the affine part touches only the ``(q, k)`` scores.
    The derivative is ``1 − tanh² = 4σ(1 − σ)``.
    """

    def __init__(
        self, qa: Tensor, ka: Tensor, vec: Tensor, scale: float, tiling: Tiling, grads: bool
    ):
        self.qa2, self.ka2 = qa * 2.0, ka * 2.0  # (n, G·Lq | Lk, A)
        self.vec, self.scale = vec, scale
        self.shift = scale * float(vec.sum())  # scale · Σv
        self._sig: Tensor | None = None
        # One reused buffer for the (n, q, k, A) tile: tiles never touch fresh memory.
        self._work = qa.new_empty(qa.shape[0] * tiling.qb * tiling.kb * qa.shape[-1])
        if grads:
            self.dqa, self.dka = torch.zeros_like(qa), torch.zeros_like(ka)
            self.dvec = torch.zeros_like(vec)

    def scores(self, r0: int, r1: int, k0: int, k1: int, add: Tensor | None = None,
               entries: slice = ALL) -> Tensor:
        qa2, ka2 = self.qa2[entries, r0:r1], self.ka2[entries, k0:k1]
        n, width = qa2.shape[0], qa2.shape[-1]
        hidden = self._work[: n * (r1 - r0) * (k1 - k0) * width].view(n, r1 - r0, k1 - k0, width)
        torch.add(qa2.unsqueeze(2), ka2.unsqueeze(1), out=hidden)
        sig = hidden.sigmoid_()  # σ(2x), x = qa + ka: (n, q, k, A)
        self._sig = sig
        s = torch.matmul(sig, self.vec).mul_(2.0 * self.scale).sub_(self.shift)  # (n, q, k)
        return s if add is None else s.add_(add)

    def backward(self, ds: Tensor, r0: int, r1: int, k0: int, k1: int) -> None:
        sig = self._sig  # the tile just recomputed by scores()
        if sig is None or sig.shape[1:3] != ds.shape[1:]:
            raise RuntimeError("additive kernel: backward tile does not match the scores")
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


def _rows(call: _Call, qa: Tensor, ka: Tensor, vec: Tensor, v: Tensor) -> tuple[Tensor, ...]:
    """``qr, kr (n, G·Lq | Lk, A)``, ``vc (A,)``, ``vr (n, Lk, Dv)`` in the compute dtype."""
    cd, hkv = compute_dtype(qa.dtype), call.plan.shapes.kv_heads
    return to_rows(qa, hkv, cd), to_rows(ka, hkv, cd), vec.to(cd), to_rows(v, hkv, cd)


def _backward(
    call: _Call, saved: tuple[Tensor | None, ...], dout: Tensor | None, dweights: Tensor | None,
    bias_grad: bool,
) -> tuple[list[Tensor], Tensor | None, list[Tensor | None]]:
    """``[dqa (B, Hq, Lq, A), dka (B, Hkv, Lk, A), dvec (A,), dv (B, Hkv, Lk, Dv)]`` in the
    compute dtype, the bias's gradient (with ``bias_grad``) and the ``score_mod`` leaves'."""
    qr, kr, vc, vr, out, lse, weights = saved
    s = call.plan.shapes
    hkv, b, hq = s.kv_heads, s.batch, s.q_heads
    dout_rows = torch.zeros_like(out) if dout is None else to_rows(dout, hkv, out.dtype)
    bias = call.plan.visibility.bias
    dbias = None
    if bias_grad and bias is not None:
        dbias = torch.zeros(bias.shape, dtype=qr.dtype, device=qr.device)
    sb = call.scores(qr, kr, vc, grads=True)
    tiles = sb.inner if isinstance(sb, ModScores) else sb
    dv = online.gradients(sb, dout_rows, (vr, out, lse, weights), dweights, call.tiling, dbias)
    leaf_grads = sb.leaf_grads if isinstance(sb, ModScores) else []
    grads = [
        from_rows(tiles.dqa, b, hq),  # (B, Hq, Lq, A)
        tiles.dka.reshape(b, hkv, *tiles.dka.shape[1:]),  # (B, Hkv, Lk, A)
        tiles.dvec,
        dv.reshape(b, hkv, *dv.shape[1:]),  # (B, Hkv, Lk, Dv)
    ]
    return grads, dbias, leaf_grads


class _AdditiveAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, qa: Tensor, ka: Tensor, vec: Tensor, v: Tensor, bias: Tensor | None,
        call: _Call, *leaves: Tensor,
    ):
        s, plan = call.plan.shapes, call.plan
        qr, kr, vc, vr = _rows(call, qa, ka, vec, v)
        reduce = None if plan.summary is None else summaries.reduction(
            plan.summary, s, plan.dtype, qr.dtype, qa.device)
        out, lse, weights = online.attention(call.scores(qr, kr, vc), vr, call.tiling, call.weights,
                                             consume=reduce)
        ctx.save_for_backward(qr, kr, vc, vr, out, lse, weights)
        ctx.call = call
        ctx.dtypes = (qa.dtype, ka.dtype, vec.dtype, v.dtype, None if bias is None else bias.dtype)
        summary = None if reduce is None else reduce.result()
        return online.returned(ctx, out, lse, weights, summary, s.batch, s.q_heads, v.dtype)

    @staticmethod
    def backward(ctx: Any, dout: Tensor | None, _dlse: Tensor | None, *extra: Tensor | None):
        dweights = extra[0] if ctx.call.weights else None
        online.no_double_backward("additive")
        grads, dbias, leaf_grads = _backward(
            ctx.call, ctx.saved_tensors, dout, dweights, ctx.needs_input_grad[4]
        )
        *dtypes, bias_t = ctx.dtypes
        return (
            *(g.to(t) for g, t in zip(grads, dtypes, strict=True)),
            None if dbias is None else dbias.to(bias_t),
            None,
            *(leaf_grads or [None] * (len(ctx.needs_input_grad) - 6)),
        )


def _op_forward(inputs: list[Tensor], plan: AttentionPlan) -> list[Tensor]:
    """``attnkit::block_attention``'s additive forward (see :mod:`attnkit.kernels.ops`)."""
    call = _Call(plan, inputs[0].shape[-1])
    qr, kr, vc, vr = _rows(call, *inputs)
    found = online.attention(call.scores(qr, kr, vc), vr, call.tiling, call.weights)
    return ops.user_layout(found, plan.shapes.batch, plan.shapes.q_heads)


def _op_backward(
    grads: list[Tensor | None], inputs: list[Tensor], outputs: list[Tensor], plan: AttentionPlan,
    bias_grad: bool, sink_grad: bool,
) -> list[Tensor]:
    """``attnkit::block_attention_backward`` for additive (no sinks: plain softmax only, so
    ``sink_grad`` is always false and the sinks' gradient empty)."""
    call = _Call(plan, inputs[0].shape[-1])
    rows = ops.rows_layout(outputs, plan.shapes.kv_heads, compute_dtype(plan.dtype))
    saved = (*_rows(call, *inputs), *rows)
    dout, _, dweights = (ops.present(g) for g in grads)
    found, dbias, _ = _backward(call, saved, dout, dweights, bias_grad)
    return [*found, ops.empty(found[0]) if dbias is None else dbias, ops.empty(found[0])]


ops.register_op_kernel("additive", _op_forward, _op_backward)


KERNEL = Kernel(
    "additive",
    additive,
    Capabilities(scores=frozenset({"additive", "concat"}), normalizers=SOFTMAX, dtypes=FLOATS,
                 summaries=True, extra=ops.refuses),
    declines=_declines,
    priority=30,
    description="additive/concat scores in blocks with the online softmax",
)
