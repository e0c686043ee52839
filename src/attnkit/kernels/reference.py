"""The ``reference`` kernel: materialise everything in float32 (float64 stays float64).

The oracle every other kernel is tested against. It serves every request: every score,
normalizer, mask, window, dropout, grouped heads, weights and gradients (through autograd).

Shapes: q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) -> out (B, Hq, Lq, Dv),
lse (B, Hq, Lq) float32 (softmax only), weights (B, Hq, Lq, Lk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.kernels.plan import AttentionPlan


def reference(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    compute = torch.promote_types(q.dtype, torch.float32)
    group = plan.shapes.group
    qf = q.to(compute)
    kf, vf = k.to(compute), v.to(compute)
    if group > 1:
        kf = kf.repeat_interleave(group, dim=1)  # (B, Hq, Lk, D)
        vf = vf.repeat_interleave(group, dim=1)  # (B, Hq, Lk, Dv)
    scores = plan.score(qf, kf)  # (B, Hq, Lq, Lk)
    if plan.bias is not None:
        scores = scores + plan.bias.to(compute)
    lq, lk = plan.shapes.q_len, plan.shapes.kv_len
    allowed = plan.mask_block(0, lq, 0, lk)  # (B|1, Hq|1, Lq, Lk) or None
    weights = plan.normalize(scores, allowed)  # (B, Hq, Lq, Lk)
    lse = None
    if plan.normalizer_name == "softmax":
        visible = scores if allowed is None else scores.masked_fill(~allowed, float("-inf"))
        lse = torch.logsumexp(visible.detach(), dim=-1).float()  # (B, Hq, Lq); -inf if empty
    dropped = F.dropout(weights, plan.dropout_p) if plan.dropout_p > 0 else weights
    out = torch.matmul(dropped, vf)  # (B, Hq, Lq, Dv)
    returned = weights.to(q.dtype) if plan.return_weights else None
    return out.to(q.dtype), lse, returned
