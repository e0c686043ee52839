"""The ``sdpa`` kernel: PyTorch's fused ``scaled_dot_product_attention``.

Used whenever it can serve the request exactly: softmax over a dot-product score (``dot``,
``scaled_dot``, ``general``, ``cosine`` through their :class:`DotForm`), any mask (causal with
``Lq != Lk``, windows and key lengths are passed as a dense bool mask), grouped heads, dropout.
It cannot return the weights.

Shapes: q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) -> out (B, Hq, Lq, Dv).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import statically_known_true

from attnkit.kernels.plan import AttentionPlan


def uses_is_causal(plan: AttentionPlan) -> bool:
    """Whether :func:`sdpa` hands the causal mask to PyTorch as ``is_causal`` (no dense mask).
    With symbolic sizes (traced) only where ``Lq == Lk`` for every size."""
    return (
        plan.causal
        and statically_known_true(plan.shapes.q_len == plan.shapes.kv_len)
        and plan.window is None
        and plan.key_lengths is None
        and plan.mask is None
        and plan.bias is None  # PyTorch refuses is_causal together with an attn_mask
    )


def dense_mask_shape(plan: AttentionPlan) -> tuple[int, int, int, int] | None:
    """The shape of the dense ``attn_mask`` :func:`sdpa` builds (bool and/or float), or
    ``None``; a band (causal ``Lq != Lk`` or a window) counts as ``(Lq, Lk)`` even where it
    turns out to hide nothing."""
    s = plan.shapes
    shape = [1, 1, 1, 1]
    if plan.has_mask and not uses_is_causal(plan):
        if plan.causal or plan.window is not None:
            shape[2:] = [s.q_len, s.kv_len]
        if plan.key_lengths is not None:
            shape[0], shape[3] = s.batch, s.kv_len
    for part in (plan.mask, plan.bias):
        if part is not None:
            shape = [max(a, int(b)) for a, b in zip(shape, part.shape, strict=True)]
    return None if shape == [1, 1, 1, 1] else (shape[0], shape[1], shape[2], shape[3])


def sdpa(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    form = plan.dot_form
    assert form is not None  # guaranteed by the capabilities (dot_product_scores=True)
    q, k = form.prepare_q(q), form.prepare_k(k)
    lq, lk = plan.shapes.q_len, plan.shapes.kv_len
    plain_causal = uses_is_causal(plan)
    allowed = None if plain_causal or not plan.has_mask else plan.mask_block(0, lq, 0, lk)
    attn_mask: Tensor | None = allowed  # (B|1, Hq|1, Lq, Lk) bool
    if plan.bias is not None:
        bias = plan.bias.to(q.dtype)
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
