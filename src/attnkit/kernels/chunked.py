"""The ``chunked`` kernel: FlashAttention written with PyTorch tensor ops.

Forward (Dao et al. 2022; FORMULAS.md "Online softmax"): for each block of queries, the online
softmax of :mod:`online` over the key tiles the :class:`Visibility` leaves visible — tiles no
query of the block can see (causal, window, lengths, a ``mask_mod``'s empty blocks) are
skipped, and a tile mask is built only for tiles the constraints cut through. Extra memory:
one tile plus ``O(Lq)`` row state. On CPU, tiles of plain dot products (no dropout, weights or
summary) run in PyTorch's fused FlashAttention kernel, forward and backward
(:func:`tiling.fusable`).

Backward (FlashAttention-2): an autograd function that saves only ``q, k, v, out, lse`` and
recomputes each tile (:func:`online.backward`), so training is ``O(length)`` in memory too.
Dropout regenerates each tile's keep-mask from a seed. A ``score_mod`` is applied to each tile
(:class:`~attnkit.kernels.tile_scores.ModScores`), with its gradient.

With ``return_weights=True`` the exact weights are written tile by tile into the output tensor
(:mod:`attnkit.kernels.weights`; with a ``score_mod``, by :func:`online.probabilities` from the
final lse) and the backward pass reads them.

A summary of the weights (``plan.summary``, :mod:`attnkit.kernels.summaries`) is made in one
pass where a tile can hold whole rows (:func:`tiling.whole_rows`: the tile's scores are
normalised in place, multiplied with the values and reduced while still in cache; at most
``WHOLE_ROWS_ELEMENTS`` scores at once), else from a second pass over the keys with the final
lse (:func:`online.probabilities`). The full weights never exist. The summary is detached; the
output keeps its gradient.

Serves softmax over any dot-product score (``dot``, ``scaled_dot``, ``general``, ``cosine``
through the plan's ``DotForm``; gradients reach score parameters through it), every kind of
visibility, float biases (with their gradient), grouped heads, dropout, ``score_mod``, and
attention sinks (normalizer ``softmax_with_sinks``): a key of score ``σ`` and value 0 merged
into each row's lse after the last tile (:func:`online.merge_` with ``out_b=None``), so the
backward pass is FlashAttention-2's with that lse ``lse'``, plus the sinks' own gradient
(:func:`online.sink_grad`, ``−D · p_sink``; with the weights' gradient ``D`` includes
``rowsum(W ∘ dW)``). The lse returned then includes the sink. The weights and summaries with
sinks are the ones the model uses, ``P' = exp(S − lse')`` (rows summing to ``1 − p_sink``): a
second pass with ``lse'`` gives them directly; whole rows normalised without the sink (the
weights' one pass, a summary's tiles of whole rows) are scaled by ``exp(lse − lse')``
(:func:`online.sink_share`).
Tiles are computed in float32 for 16-bit inputs, in float64 for float64.

Shapes: q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) -> out (B, Hq, Lq, Dv),
lse (B, Hq, Lq) float32 (None when the weights are returned), weights (B, Hq, Lq, Lk), the
summary, or None. Internally the rows layout ``(B·Hkv, G·Lq, ·)`` of :mod:`online`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnkit.kernels import online, ops, summaries
from attnkit.kernels.online import compute_dtype, from_rows, to_rows
from attnkit.kernels.plan import AttentionPlan
from attnkit.kernels.registry import FLOATS, SOFTMAX, Capabilities, Kernel
from attnkit.kernels.tile_scores import DotScores, ModScores, modded
from attnkit.kernels.tiling import Tiling, dropout_for, whole_rows
from attnkit.kernels.weights import rows_backward, rows_forward

_BLOCK_ELEMENTS = 1 << 21  # scores per tile across the batch (8 MiB in float32)
_KEY_BLOCK = 1024


def chunked(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Blockwise attention with ``O(length)`` memory; see the module docstring."""
    form = plan.score.dot
    assert form is not None  # guaranteed by the capabilities (dot_product_scores=True)
    cd = compute_dtype(q.dtype)  # transform q, k in the compute dtype, as the reference does
    qp, kp = form.prepare_q(q.to(cd)), form.prepare_k(k.to(cd))
    if torch.compiler.is_compiling():  # one opaque operator (see kernels/ops.py)
        # with sinks the lse is made and returned in every case (the backward pass reads it)
        need_lse = (plan.needs_grad and not plan.return_weights) or plan.sinks is not None
        return ops.run("chunked", [qp, kp, v], plan, form.scale, need_lse=need_lse)
    call = _Call(plan, form.scale)
    bias = plan.visibility.bias
    out, lse, *rest = _ChunkedAttention.apply(qp, kp, v, bias, plan.sinks, call,
                                              *plan.score.mod_leaves)
    return out, lse, rest[0] if len(rest) == 1 else tuple(rest)


def tiling(plan: AttentionPlan) -> Tiling:
    """Tiles of up to ``_KEY_BLOCK`` keys by as many queries as make ``_BLOCK_ELEMENTS``."""
    s = plan.shapes
    n = s.batch * s.kv_heads
    kb = max(16, min(s.kv_len, _KEY_BLOCK))
    qb = max(16, min(1024, _BLOCK_ELEMENTS // (n * kb)))
    merge = 0
    if plan.visibility.block_mask is not None:  # whole blocks, one block of queries at a time:
        qb, kbs = plan.visibility.block_mask.block_size  # the keys a block sees fit the tiles
        kb = max(kbs, kb // kbs * kbs)  # closely; a table's full tiles stay full
        merge = _BLOCK_ELEMENTS
    dropout = dropout_for(plan)
    return Tiling(plan.visibility, s.kv_heads, qb, kb, compute_dtype(plan.dtype), dropout,
                  merge=merge)


class _Call:
    """The per-call settings the autograd function needs (not tensors to differentiate)."""

    def __init__(self, plan: AttentionPlan, scale: float) -> None:
        self.plan, self.scale, self.tiling = plan, scale, tiling(plan)
        self.weights = plan.return_weights
        self.mod = plan.score.mod

    def scores(
        self, qr: Tensor, kr: Tensor, grads: tuple[Tensor, Tensor] | None = None,
        tiles: Tiling | None = None,
    ):
        tiles = tiles or self.tiling
        dots = DotScores(qr, kr, tiles, grads, self.scale)
        return modded(dots, self.plan.score, tiles, grads is not None)

    def summarised(self, qr: Tensor, kr: Tensor, vr: Tensor, sinks: Tensor | None):
        """``(out, lse or None, summary)`` in the rows layout (see the module docstring);
        ``sinks (n, G·Lq)`` or ``None``."""
        plan = self.plan
        reduce = summaries.reduction(plan.summary, plan.shapes, plan.dtype, qr.dtype, qr.device)
        rows = whole_rows(self.tiling)
        if rows is None:  # a second pass over the keys with the final lse (the sink's included)
            sb = self.scores(qr, kr)
            out, lse, _ = online.attention(sb, vr, self.tiling, False)
            if sinks is not None:
                assert lse is not None
                online.merge_(out, lse, None, sinks)
            online.probabilities(sb, lse, self.tiling, reduce)
            return out, lse, reduce.result()
        sb = self.scores(qr, kr, tiles=rows)
        out, lse = online.in_one_pass(sb, vr, rows, reduce, need_lse=plan.needs_grad,
                                      sinks=sinks)
        return out, lse, reduce.result()


def _rows(call: _Call, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``qr``, ``kr``, ``vr`` in the rows layout and the compute dtype: views of the inputs
    when they are in it (the scale is applied by the score products, not by a copy of q)."""
    cd, hkv = compute_dtype(q.dtype), call.plan.shapes.kv_heads
    return to_rows(q, hkv, cd), to_rows(k, hkv, cd), to_rows(v, hkv, cd)  # (n, G·Lq|Lk, D|Dv)


def _forward(call: _Call, q: Tensor, k: Tensor, v: Tensor) -> tuple[tuple, Any]:
    """What the backward pass needs, in the rows layout: ``(qr, kr, vr, out (n, G·Lq, Dv),
    lse (n, G·Lq) or None, weights (n, G·Lq, Lk) or None)``, and the plan's summary (or
    ``None``). With sinks, ``out``, ``lse`` and the weights include them."""
    qr, kr, vr = _rows(call, q, k, v)
    plan = call.plan
    sinks = None if plan.sinks is None else _sink_rows(call, plan.sinks, qr.dtype)  # (n, G·Lq)
    lse, summary, weights = None, None, None
    if plan.summary is not None:
        out, lse, summary = call.summarised(qr, kr, vr, sinks)
    elif call.weights and call.mod is None:  # the backward pass reads the weights
        weights = qr.new_empty(*qr.shape[:2], plan.shapes.kv_len)  # (n, G·Lq, Lk)
        lse = None if sinks is None else qr.new_empty(qr.shape[:2])  # (n, G·Lq)
        out = rows_forward(qr, kr, vr, call.tiling, weights, call.scale, lse=lse)
        if sinks is not None:  # the weights of whole rows, normalised without the sink
            assert lse is not None
            weights.mul_(online.sink_share(lse, sinks).unsqueeze(-1))
            online.merge_(out, lse, None, sinks)
    else:
        sb = call.scores(qr, kr)
        need_lse = plan.needs_grad or call.weights or sinks is not None
        out, lse, _ = online.attention(sb, vr, call.tiling, False, need_lse=need_lse)
        if sinks is not None:  # a key of score σ and value 0, merged after the last tile
            assert lse is not None
            online.merge_(out, lse, None, sinks)
        if call.weights:  # a second pass with the final lse: P' = exp(S − lse')
            assert lse is not None
            weights = qr.new_zeros(*qr.shape[:2], plan.shapes.kv_len)  # (n, G·Lq, Lk)
            online.probabilities(sb, lse, call.tiling, online.write_weights(weights,
                                                                             plan.shapes.q_len))
    return (qr, kr, vr, out, lse, weights), summary


def _sink_rows(call: _Call, sinks: Tensor, dtype: torch.dtype) -> Tensor:
    """The plan's sinks ``(B, Hq, Lq)`` in the rows layout ``(n, G·Lq)``."""
    return sinks.to(dtype).reshape(call.plan.shapes.batch * call.plan.shapes.kv_heads, -1)


def _backward(
    call: _Call, saved: tuple[Tensor | None, ...], dout: Tensor | None, dweights: Tensor | None,
    bias_grad: bool, sink_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None, list[Tensor | None]]:
    """``dq (B, Hq, Lq, D)``, ``dk (B, Hkv, Lk, D)``, ``dv (B, Hkv, Lk, Dv)`` in the compute
    dtype, the bias's gradient (with ``bias_grad``), the sinks' ``(B, Hq, Lq)`` (with
    ``sink_grad`` and sinks in the plan) and the ``score_mod`` leaves'."""
    qr, kr, vr, out, lse, weights = saved
    s, hkv = call.plan.shapes, call.plan.shapes.kv_heads
    dout_rows = torch.zeros_like(out) if dout is None else to_rows(dout, hkv, out.dtype)
    bias = call.plan.visibility.bias
    dbias = None
    if bias_grad and bias is not None:
        dbias = torch.zeros(bias.shape, dtype=qr.dtype, device=qr.device)
    leaf_grads: list[Tensor | None] = []
    if weights is not None and call.mod is None:  # the weights of rows_forward
        dqr, dk, dv = rows_backward(dout_rows, dweights, (qr, kr, vr, weights), call.tiling,
                                    dbias, call.scale)
    else:
        dqr, dk = torch.zeros_like(qr), torch.zeros_like(kr)
        sb = call.scores(qr, kr, (dqr, dk))
        dv = online.gradients(sb, dout_rows, (vr, out, lse, weights), dweights, call.tiling,
                              dbias)
        if isinstance(sb, ModScores):
            leaf_grads = sb.leaf_grads
    dq = from_rows(dqr, s.batch, s.q_heads)  # (B, Hq, Lq, D)
    dk4 = dk.reshape(s.batch, hkv, *dk.shape[1:])  # (B, Hkv, Lk, D)
    dv4 = dv.reshape(s.batch, hkv, *dv.shape[1:])  # (B, Hkv, Lk, Dv)
    sinks, dsinks = call.plan.sinks, None
    if sinks is not None and sink_grad:  # −D · p_sink per row
        assert lse is not None
        row_dot = None  # D = rowsum(dO ∘ O'), made by sink_grad
        if weights is not None and dweights is not None:  # D = rowsum(dO ∘ O') + rowsum(W ∘ dW)
            dw = dweights.reshape(weights.shape).to(weights.dtype)  # (n, G·Lq, Lk)
            row_dot = torch.linalg.vecdot(dout_rows, out) + torch.linalg.vecdot(weights, dw)
        found = online.sink_grad(dout_rows, out, lse, _sink_rows(call, sinks, lse.dtype),
                                 row_dot=row_dot)
        dsinks = from_rows(found, s.batch, s.q_heads).to(sinks.dtype)  # (B, Hq, Lq)
    return dq, dk4, dv4, dbias, dsinks, leaf_grads


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None,
                sinks: Tensor | None, call: _Call, *leaves: Tensor):
        s = call.plan.shapes
        saved, summary = _forward(call, q, k, v)
        ctx.save_for_backward(*saved)
        ctx.call = call
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, None if bias is None else bias.dtype)
        _, _, _, out, lse, weights = saved
        return online.returned(ctx, out, lse, weights, summary, s.batch, s.q_heads, v.dtype)

    @staticmethod
    def backward(ctx: Any, dout: Tensor | None, _dlse: Tensor | None, *extra: Tensor | None):
        dweights = extra[0] if ctx.call.weights else None
        online.no_double_backward("chunked")
        dq, dk, dv, dbias, dsinks, leaf_grads = _backward(
            ctx.call, ctx.saved_tensors, dout, dweights, ctx.needs_input_grad[3],
            ctx.needs_input_grad[4],
        )
        q_dtype, k_dtype, v_dtype, bias_dtype = ctx.dtypes
        extra = leaf_grads or [None] * (len(ctx.needs_input_grad) - 6)
        return (dq.to(q_dtype), dk.to(k_dtype), dv.to(v_dtype),
                None if dbias is None else dbias.to(bias_dtype), dsinks, None, *extra)


def _op_forward(inputs: list[Tensor], plan: AttentionPlan) -> list[Tensor]:
    """``attnkit::block_attention``'s chunked forward (see :mod:`attnkit.kernels.ops`)."""
    saved, _ = _forward(_Call(plan, plan.score.scale), *inputs)
    return ops.user_layout(saved[3:], plan.shapes.batch, plan.shapes.q_heads)


def _op_backward(
    grads: list[Tensor | None], inputs: list[Tensor], outputs: list[Tensor], plan: AttentionPlan,
    bias_grad: bool, sink_grad: bool,
) -> list[Tensor]:
    """``attnkit::block_attention_backward`` for chunked."""
    call = _Call(plan, plan.score.scale)
    rows = ops.rows_layout(outputs, plan.shapes.kv_heads, compute_dtype(plan.dtype))
    saved = (*_rows(call, *inputs), *rows)
    dout, _, dweights = (ops.present(g) for g in grads)
    dq, dk, dv, dbias, dsinks, _ = _backward(call, saved, dout, dweights, bias_grad, sink_grad)
    return [dq, dk, dv, *(ops.empty(dq) if g is None else g for g in (dbias, dsinks))]


ops.register_op_kernel("chunked", _op_forward, _op_backward)


KERNEL = Kernel(
    "chunked",
    chunked,
    Capabilities(dot_product_scores=True, normalizers=SOFTMAX | {"softmax_with_sinks"},
                 dtypes=FLOATS, summaries=True, extra=ops.refuses),
    priority=20,
    description="online softmax over blocks (FlashAttention in tensor ops); exact weights",
)
