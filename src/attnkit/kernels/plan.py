"""The plan: everything a kernel needs to know about one attention call.

``functional.attention()`` validates the user's arguments and resolves them into an
:class:`AttentionPlan`. Kernels receive the plan and never look at the user's arguments
(nor import ``scores``/``normalizers``/``masks``): the score, the normalizer and the mask
arrive here as ready-made callables, so a kernel file depends on ``torch`` alone.

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

# (q (B, H, Lq, D), k (B, H, Lk, Dk)) -> scores (B, H, Lq, Lk), already multiplied by the scale.
ScoreCall = Callable[[Tensor, Tensor], Tensor]
# (scores (B, H, Lq, Lk), allowed bool broadcastable to scores, or None) -> weights (B, H, Lq, Lk)
NormalizeCall = Callable[[Tensor, "Tensor | None"], Tensor]
# (q_start, q_end, k_start, k_end) -> bool (B|1, H|1, q_end-q_start, k_end-k_start),
# or None when every key of the block is allowed
MaskBlockCall = Callable[[int, int, int, int], "Tensor | None"]


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


@dataclass(frozen=True)
class DotForm:
    """A score that is a scaled dot product of transformed queries and keys.

    ``scores(q, k) == scale * prepare_q(q) @ prepare_k(k).T``. Fast kernels that only know
    dot products serve ``dot``, ``scaled_dot``, ``general`` and ``cosine`` through this.
    """

    prepare_q: Callable[[Tensor], Tensor]
    prepare_k: Callable[[Tensor], Tensor]
    scale: float


@dataclass(frozen=True, eq=False)
class AttentionPlan:
    """One validated attention request.

    Positions: query ``i`` sits at key position ``Lk - Lq + i`` (bottom-right alignment) for
    both ``causal`` and ``window``; ``window=(left, right)`` lets it see keys
    ``p - left .. p + right``.
    """

    shapes: Shapes
    dtype: torch.dtype
    device: torch.device
    score_name: str
    score: ScoreCall
    score_params: Mapping[str, Tensor]
    dot_form: DotForm | None
    normalizer_name: str
    normalize: NormalizeCall
    scale: float
    causal: bool
    window: tuple[int, int] | None
    key_lengths: Tensor | None  # (B,) int64: structured key padding
    mask: Tensor | None  # bool, broadcastable to (B, Hq, Lq, Lk); True = may attend
    bias: Tensor | None  # float, broadcastable to (B, Hq, Lq, Lk); added to the scores
    mask_block: MaskBlockCall  # every boolean constraint above, for any block
    dropout_p: float
    return_weights: bool
    needs_grad: bool
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def has_mask(self) -> bool:
        """Whether any position may be hidden from a query (causal, window, padding, mask)."""
        return (
            self.causal
            or self.window is not None
            or self.key_lengths is not None
            or self.mask is not None
        )


def check_window(window: object) -> tuple[int, int] | None:
    """``window`` as ``(left, right)`` ints, or ``None``.

    Raises:
        ValueError: not a pair of integers ≥ 0.
    """
    if window is None:
        return None
    if (
        not isinstance(window, (tuple, list))
        or len(window) != 2
        or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in window)
    ):
        raise ValueError(f"window must be (left, right) with integers ≥ 0, got {window!r}")
    return int(window[0]), int(window[1])
