"""Attention kernels: one file per backend, one signature, one registry.

See :mod:`attnkit.kernels.registry` for the signature and :class:`Capabilities`. Under
``backend="auto"`` the first kernel (lowest priority number) that can serve a plan exactly
runs; :func:`attnkit.explain_dispatch` says which and why the others were passed over:

==========  ========  ===============================================================
kernel      priority  serves
==========  ========  ===============================================================
local       5         a narrow ``window``: only the band is computed (``O(L·window)``)
sdpa        10        PyTorch's fused kernel, unless it would materialise a big mask
chunked     20        any dot-product softmax request, weights, ``O(L)`` memory
additive    30        ``additive``/``concat``, blockwise, ``O(L)`` memory (not <= 4 queries)
reference   1000      everything (materialised float32 oracle)
==========  ========  ===============================================================

Under ``torch.export`` only kernels declared ``Capabilities(exports=True)`` serve (``sdpa``,
``reference``: they trace to standard ATen ops for every size) and none declines on sizes,
since the graph must hold for all of them: a ``window`` then runs as ``sdpa`` with the band as
a dense mask, and a request for weights as ``reference``.
"""

from __future__ import annotations

import math

import torch

from attnkit.kernels.additive import additive
from attnkit.kernels.chunked import chunked
from attnkit.kernels.local import block_size, local
from attnkit.kernels.plan import AttentionPlan, DotForm, Shapes
from attnkit.kernels.reference import reference
from attnkit.kernels.registry import Capabilities, Dispatch, Kernel, kernels, register, select
from attnkit.kernels.sdpa import dense_mask_shape, sdpa

_FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
_SOFTMAX = frozenset({"softmax"})
# sdpa builds its dense mask (and, with dropout on CPU, its weights) in full; past this size
# the block kernels, which build masks one block at a time, serve the request instead.
SDPA_DENSE_LIMIT = 128 << 20


def _sdpa_dense_bytes(plan: AttentionPlan) -> int:
    """Bytes the ``sdpa`` kernel would materialise for its dense mask (bool and float) and,
    on CPU with dropout, for PyTorch's math path (weights, dropout mask, their gradient)."""
    s = plan.shapes
    size = torch.finfo(plan.dtype).bits // 8
    shape = dense_mask_shape(plan)
    total = 0 if shape is None else math.prod(shape) * (size + 1)
    if plan.dropout_p > 0 and plan.device.type == "cpu":
        total += 3 * s.batch * s.q_heads * s.q_len * s.kv_len * size
    return total


def _sdpa_declines(plan: AttentionPlan) -> str | None:
    dense = _sdpa_dense_bytes(plan)
    if dense > SDPA_DENSE_LIMIT:
        return (
            f"would materialise {dense / 2**20:.0f} MiB of dense mask/weights "
            f"(limit {SDPA_DENSE_LIMIT >> 20} MiB); the block kernels build masks per block"
        )
    return None


def _local_refuses(plan: AttentionPlan) -> str | None:
    if plan.window is None:
        return "no window: local attention needs window=(left, right)"
    if plan.needs_grad and plan.bias is not None and plan.bias.requires_grad:
        return "gradient of a float (additive) mask not supported"
    return None


def _local_declines(plan: AttentionPlan) -> str | None:
    left, right = plan.window
    if plan.causal:
        right = min(right, 0)
    width = block_size(left, right) + left + right
    if 2 * width > plan.shapes.kv_len:
        return (
            f"window {plan.window} makes each block of queries see {width} of the "
            f"{plan.shapes.kv_len} keys: dense kernels are faster"
        )
    return None


# additive under auto: with this few queries per key/value head the block loop cannot amortise
# its bookkeeping, and the reference's materialised (B, Hq, Lq, Lk, A) stays small (measured:
# B=32, Lq=1, Lk 16..64, D=A 128..512 trains 1.4-2.5x slower with `additive` than `reference`).
ADDITIVE_FEW_QUERIES = 4
ADDITIVE_SMALL_HIDDEN = 1 << 23  # elements of the reference's tanh tensor (32 MiB in float32)


def _additive_declines(plan: AttentionPlan) -> str | None:
    s = plan.shapes
    params = plan.score_params
    width = int((params["weight"] if plan.score_name == "concat" else params["w_q"]).shape[0])
    hidden = s.batch * s.q_heads * s.q_len * s.kv_len * width
    if s.group * s.q_len <= ADDITIVE_FEW_QUERIES and hidden <= ADDITIVE_SMALL_HIDDEN:
        return (
            f"{s.group * s.q_len} quer{'y' if s.group * s.q_len == 1 else 'ies'} per key/value "
            f"head (<= {ADDITIVE_FEW_QUERIES}) and a {hidden * 4 / 2**20:.1f} MiB naive tanh "
            f"tensor (<= {ADDITIVE_SMALL_HIDDEN * 4 >> 20} MiB): reference is faster"
        )
    return None


register(
    Kernel(
        "local",
        local,
        Capabilities(
            dot_product_scores=True, normalizers=_SOFTMAX, weights=False, dtypes=_FLOATS,
            extra=_local_refuses,
        ),
        declines=_local_declines,
        priority=5,
        description="banded attention: only the key windows of each query block",
    )
)
register(
    Kernel(
        "sdpa",
        sdpa,
        Capabilities(
            dot_product_scores=True, normalizers=_SOFTMAX, weights=False, dtypes=_FLOATS,
            exports=True,
        ),
        declines=_sdpa_declines,
        priority=10,
        description="PyTorch's fused scaled_dot_product_attention",
    )
)
register(
    Kernel(
        "chunked",
        chunked,
        Capabilities(dot_product_scores=True, normalizers=_SOFTMAX, dtypes=_FLOATS),
        priority=20,
        description="online softmax over blocks (FlashAttention in tensor ops); exact weights",
    )
)
register(
    Kernel(
        "additive",
        additive,
        Capabilities(
            scores=frozenset({"additive", "concat"}), normalizers=_SOFTMAX, dtypes=_FLOATS
        ),
        declines=_additive_declines,
        priority=30,
        description="additive/concat scores in blocks with the online softmax",
    )
)
register(
    Kernel(
        "reference",
        reference,
        Capabilities(exports=True),
        priority=1000,
        description="materialised float32 oracle; serves everything",
    )
)

__all__ = [
    "SDPA_DENSE_LIMIT",
    "AttentionPlan",
    "Capabilities",
    "Dispatch",
    "DotForm",
    "Kernel",
    "Shapes",
    "kernels",
    "register",
    "select",
]
