"""The ``reference`` kernel: materialise everything in float32 (float64 stays float64).

The oracle every other kernel is tested against. It serves every request: every score,
``score_mod``, normalizer, visibility, dropout, grouped heads, weights and gradients (through
autograd, to any order), and summaries of the weights (reduced from the full weights).

Shapes: q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) -> out (B, Hq, Lq, Dv),
lse (B, Hq, Lq) float32 (softmax only), weights (B, Hq, Lq, Lk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.kernels.block_mask import index_grid
from attnkit.kernels.plan import AttentionPlan
from attnkit.kernels.registry import Capabilities, Kernel
from attnkit.kernels.summaries import reduce


def reference(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    compute = torch.promote_types(q.dtype, torch.float32)
    vis, group = plan.visibility, plan.shapes.group
    qf = q.to(compute)
    kf, vf = k.to(compute), v.to(compute)
    if group > 1:
        kf = kf.repeat_interleave(group, dim=1)  # (B, Hq, Lk, D)
        vf = vf.repeat_interleave(group, dim=1)  # (B, Hq, Lk, Dv)
    scores = plan.score.fn(qf, kf)  # (B, Hq, Lq, Lk)
    if plan.score.mod is not None:
        rows = torch.arange(vis.q_len, device=q.device).unsqueeze(-1)  # (Lq, 1)
        cols = torch.arange(vis.kv_len, device=q.device)  # (Lk,)
        modded = plan.score.mod(scores, *index_grid(vis.batch, vis.heads, rows, cols))
        scores = torch.broadcast_to(modded, scores.shape).to(compute)
    if vis.bias is not None:
        scores = scores + vis.bias.to(compute)
    allowed = vis.mask_of(0, vis.q_len, 0, vis.kv_len)  # (B|1, Hq|1, Lq, Lk) or None
    weights = plan.normalize(scores, allowed)  # (B, Hq, Lq, Lk)
    lse = None
    if plan.normalizer == "softmax":
        visible = scores if allowed is None else scores.masked_fill(~allowed, float("-inf"))
        lse = torch.logsumexp(visible.detach(), dim=-1).float()  # (B, Hq, Lq); -inf if empty
    dropped = F.dropout(weights, plan.dropout_p) if plan.dropout_p > 0 else weights
    out = torch.matmul(dropped, vf)  # (B, Hq, Lq, Dv)
    returned = weights.to(q.dtype) if plan.return_weights else None
    if plan.summary is not None:
        returned = reduce(weights.to(q.dtype), plan.summary)
    return out.to(q.dtype), lse, returned


KERNEL = Kernel(
    "reference",
    reference,
    Capabilities(exports=True, summaries=True),
    priority=1000,
    description="materialised float32 oracle; serves everything",
)
