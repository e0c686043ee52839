"""Attention kernels: one file per backend, one signature, one registry.

See :mod:`attnkit.kernels.registry` for the signature and :class:`Capabilities`.
"""

from __future__ import annotations

import torch

from attnkit.kernels.plan import AttentionPlan, DotForm, Shapes
from attnkit.kernels.reference import reference
from attnkit.kernels.registry import Capabilities, Dispatch, Kernel, kernels, register, select
from attnkit.kernels.sdpa import sdpa

_FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})

register(
    Kernel(
        "sdpa",
        sdpa,
        Capabilities(
            dot_product_scores=True,
            normalizers=frozenset({"softmax"}),
            weights=False,
            dtypes=_FLOATS,
        ),
        priority=10,
        description="PyTorch's fused scaled_dot_product_attention",
    )
)
register(
    Kernel(
        "reference",
        reference,
        Capabilities(),
        priority=1000,
        description="materialised float32 oracle; serves everything",
    )
)

__all__ = [
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
