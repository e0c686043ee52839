"""The plan: everything a kernel needs to know about one attention call.

``functional.attention()`` validates the user's arguments and resolves them into an
:class:`AttentionPlan`. Kernels receive the plan and never look at the user's arguments
(nor import ``scores``/``normalizers``/``masks``): the score and the normalizer arrive as
ready-made callables and forms, which keys each query sees as one
:class:`~attnkit.kernels.visibility.Visibility`, so a kernel file depends on ``torch`` alone.

Shape legend (used by every kernel file):
    B   batch
    Hq  query heads             Hkv  key/value heads (divides Hq; Hq // Hkv = G, the group)
    Lq  query length            Lk   key/value length
    D   query/key head dim      Dv   value head dim
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from attnkit.kernels.summaries import Summary
from attnkit.kernels.visibility import Visibility

# (q (B, H, Lq, D), k (B, H, Lk, Dk)) -> scores (B, H, Lq, Lk), already multiplied by the scale.
ScoreCall = Callable[[Tensor, Tensor], Tensor]
# (scores (B, H, Lq, Lk), allowed bool broadcastable to scores, or None) -> weights (B, H, Lq, Lk)
NormalizeCall = Callable[[Tensor, "Tensor | None"], Tensor]
# FlexAttention's score_mod(score, b, h, q_idx, kv_idx) -> score, on broadcastable tensors
ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Shapes:
    """The sizes of one attention call."""

    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    key_dim: int
    value_dim: int

    @property
    def group(self) -> int:
        """Query heads per key/value head (1 for plain multi-head attention)."""
        return self.q_heads // self.kv_heads


def unchanged(x: Tensor) -> Tensor:
    """The :class:`DotForm` preparation of a plain dot product: ``x`` itself (a kernel may
    skip calling it)."""
    return x


@dataclass(frozen=True)
class DotForm:
    """A score that is a scaled dot product of transformed queries and keys.

    ``scores(q, k) == scale * prepare_q(q) @ prepare_k(k).T``. Fast kernels that only know
    dot products serve ``dot``, ``scaled_dot``, ``general`` and ``cosine`` through this.
    """

    prepare_q: Callable[[Tensor], Tensor]
    prepare_k: Callable[[Tensor], Tensor]
    scale: float


@dataclass(frozen=True)
class AdditiveForm:
    """``scores(q, k) == scale · vᵀ tanh(W q + U k [+ b])``: ``w_q (A, Dq)``, ``w_k (A, Dk)``,
    ``bias (A,)`` or ``None``, ``v (A,)`` (``additive``, and ``concat`` with its ``W`` split)."""

    w_q: Tensor
    w_k: Tensor
    bias: Tensor | None
    v: Tensor
    scale: float


@dataclass(frozen=True)
class Scoring:
    """How the scores are made: ``fn(q, k)`` (scaled), the dot-product or additive form a
    fast kernel can use instead, and a ``score_mod`` applied after it (with the tensors it
    reads that need gradients, ``mod_leaves``)."""

    name: str
    fn: ScoreCall
    params: Mapping[str, Tensor]
    scale: float
    dot: DotForm | None = None
    additive: AdditiveForm | None = None
    mod: ScoreMod | None = None
    mod_leaves: tuple[Tensor, ...] = ()


@dataclass(frozen=True, eq=False)
class AttentionPlan:
    """One validated attention request: shapes, score, normalizer, visibility, dropout, and
    what to return: the full weights (``return_weights``) or a ``summary`` of them (computed
    by the kernel, without the full weights when it walks tiles; see :mod:`summaries`)."""

    shapes: Shapes
    dtype: torch.dtype
    device: torch.device
    score: Scoring
    normalizer: str
    normalize: NormalizeCall
    visibility: Visibility
    dropout_p: float
    return_weights: bool
    needs_grad: bool
    summary: Summary | None = None
    # Normalizer "softmax_with_sinks": each row's sink logit (B, Hq, Lq), a broadcast view of
    # the user's tensor (its gradient flows back through the view); None otherwise.
    sinks: Tensor | None = None
    notes: dict[str, str] = field(default_factory=dict)
    # The block kernels' dropout seed (None: drawn per call); set when a custom operator
    # (kernels/ops.py) carries the call, so its backward regenerates the forward's masks.
    dropout_seed: int | None = None
