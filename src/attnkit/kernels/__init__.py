"""Attention kernels: one file per backend, one signature, one registry.

See :mod:`attnkit.kernels.registry` for the signature and :class:`Capabilities`; each kernel's
file says what it serves and when it declines. Under ``backend="auto"`` the first kernel
(lowest priority number) that can serve a plan exactly runs; :func:`attnkit.explain_dispatch`
says which and why the others were passed over:

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

Under ``torch.compile`` ``sdpa`` and ``reference`` are traced, and ``chunked``, ``local`` and
``additive`` each run whole as the custom operator ``attnkit::block_attention``
(:mod:`~attnkit.kernels.ops`; docs/compile.md).

What every kernel shares: :mod:`~attnkit.kernels.visibility` (which keys each query may see,
tile by tile), :mod:`~attnkit.kernels.online` (the online softmax and its backward).
"""

from __future__ import annotations

from attnkit.kernels import additive, chunked, local, reference, sdpa
from attnkit.kernels.block_mask import BlockMask
from attnkit.kernels.plan import AttentionPlan, DotForm, Scoring, Shapes
from attnkit.kernels.registry import Capabilities, Dispatch, Kernel, kernels, register, select
from attnkit.kernels.visibility import Tile, Visibility

for _module in (local, sdpa, chunked, additive, reference):
    register(_module.KERNEL)

__all__ = [
    "AttentionPlan",
    "BlockMask",
    "Capabilities",
    "Dispatch",
    "DotForm",
    "Kernel",
    "Scoring",
    "Shapes",
    "Tile",
    "Visibility",
    "kernels",
    "register",
    "select",
]
