"""The ``sdpa`` kernel: PyTorch's fused ``scaled_dot_product_attention``.

Used whenever it can serve the request exactly: softmax over a dot-product score (``dot``,
``scaled_dot``, ``general``, ``cosine`` through their :class:`DotForm`), any visibility (a
top-left causal band goes to PyTorch as ``is_causal``; anything else as the dense bool mask the
:class:`~attnkit.kernels.visibility.Visibility` builds), grouped heads, dropout. It cannot
return the weights nor apply a ``score_mod``. Under ``auto`` it declines when the dense mask
(or, on CPU with dropout, PyTorch's materialised weights) would be large: the block kernels
build masks one tile at a time.

Shapes: q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) -> out (B, Hq, Lq, Dv).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.kernels.plan import AttentionPlan, unchanged
from attnkit.kernels.registry import FLOATS, SOFTMAX, Answer, Capabilities, Kernel

DENSE_LIMIT = 128 << 20  # bytes of dense mask/weights beyond which auto prefers block kernels
SPARSE = 0.5  # block masks leaving at most this fraction of blocks go to the block kernels


def dense_bytes(plan: AttentionPlan) -> int:
    """Bytes :func:`sdpa` would materialise for its dense mask (bool and float) and, on CPU
    with dropout, for PyTorch's math path (weights, dropout mask, their gradient)."""
    s, vis = plan.shapes, plan.visibility
    size = torch.finfo(plan.dtype).bits // 8
    shape = None if vis.top_left_causal else vis.dense_shape()
    total = 0 if shape is None else math.prod(shape) * (size + 1)
    if plan.dropout_p > 0 and plan.device.type == "cpu":
        total += 3 * s.batch * s.q_heads * s.q_len * s.kv_len * size
    return total


def _declines(plan: AttentionPlan) -> str | None:
    block_mask = plan.visibility.block_mask
    if block_mask is not None and block_mask.density <= SPARSE:
        return (
            f"the block mask hides {1 - block_mask.density:.0%} of its blocks entirely: "
            f"the block kernels skip them"
        )
    dense = dense_bytes(plan)
    if dense > DENSE_LIMIT:
        return (
            f"would materialise {dense / 2**20:.0f} MiB of dense mask/weights "
            f"(limit {DENSE_LIMIT >> 20} MiB); the block kernels build masks per block"
        )
    return None


def sdpa(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    form, vis = plan.score.dot, plan.visibility
    assert form is not None  # guaranteed by the capabilities (dot_product_scores=True)
    q, k = form.prepare_q(q), form.prepare_k(k)
    plain_causal = vis.top_left_causal
    allowed = None
    if vis.has_mask and not plain_causal:
        allowed = vis.mask_of(0, vis.q_len, 0, vis.kv_len)  # (B|1, Hq|1, Lq, Lk) bool
    attn_mask: Tensor | None = allowed
    if vis.bias is not None:
        # Never round a wider bias (float32 ALiBi with bfloat16 inputs) to the input's dtype:
        # scaled_dot_product_attention adds a float32 bias in float32, as PyTorch users get.
        bias = vis.bias.to(torch.promote_types(vis.bias.dtype, q.dtype))
        attn_mask = bias if allowed is None else bias.masked_fill(~allowed, float("-inf"))
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=attn_mask,
        dropout_p=plan.dropout_p,
        is_causal=plain_causal,
        scale=form.scale,
        enable_gqa=plan.shapes.group > 1,
    )  # (B, Hq, Lq, Dv)
    if allowed is not None:
        has_key = allowed.any(dim=-1, keepdim=True)  # (B|1, Hq|1, Lq, 1)
        # Traced (export/compile), the check would be a data-dependent branch: always fill.
        if torch.compiler.is_compiling() or not bool(has_key.all()):
            out = out.masked_fill(~has_key, 0.0)  # a query with nothing to see gives 0
    return out, None, None


def _bind(plan: AttentionPlan) -> Answer:
    """:func:`sdpa`'s output bound to ``plan`` (which asks for no weights): without a mask or
    bias, PyTorch's kernel itself, given only the arguments that differ from its defaults
    (each keyword argument costs time in a small call); with them, :func:`sdpa`."""
    form, vis = plan.score.dot, plan.visibility
    assert form is not None  # guaranteed by the capabilities (dot_product_scores=True)
    if vis.bias is not None or (vis.has_mask and not vis.top_left_causal):
        return lambda q, k, v: sdpa(q, k, v, plan)[0]
    options: dict[str, Any] = {}
    if plan.dropout_p > 0:
        options["dropout_p"] = plan.dropout_p
    if vis.top_left_causal:
        options["is_causal"] = True
    plain_dot = form.prepare_q is unchanged and form.prepare_k is unchanged
    if not plain_dot or form.scale != 1 / math.sqrt(plan.shapes.head_dim):  # PyTorch's default
        options["scale"] = form.scale
    if plan.shapes.group > 1:
        options["enable_gqa"] = True
    attend = partial(F.scaled_dot_product_attention, **options) if options else (
        F.scaled_dot_product_attention
    )
    if plain_dot:
        return attend  # (q, k, v) -> out (B, Hq, Lq, Dv), with no Python frame of ours
    prepare_q, prepare_k = form.prepare_q, form.prepare_k
    return lambda q, k, v: attend(prepare_q(q), prepare_k(k), v)  # (B, Hq, Lq, Dv)


KERNEL = Kernel(
    "sdpa",
    sdpa,
    Capabilities(
        dot_product_scores=True, normalizers=SOFTMAX, score_mod=False, weights=False,
        dtypes=FLOATS, exports=True,
    ),
    declines=_declines,
    priority=10,
    description="PyTorch's fused scaled_dot_product_attention",
    bind=_bind,
)
