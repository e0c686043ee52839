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
from torch.fx.experimental.symbolic_shapes import statically_known_true

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


def check_qkv(
    q: object, k: object, v: object, *, same_head_dim: bool = False, what: str = ""
) -> tuple[int, int, int, int, int, int, int, int]:
    """``(B, Hq, Hkv, Lq, Lk, D, Dk, Dv)`` of ``q (B, Hq, Lq, D)``, ``k (B, Hkv, Lk, Dk)``,
    ``v (B, Hkv, Lk, Dv)``; ``what`` prefixes every message (``"ring_attention: "``).

    Raises:
        TypeError: not tensors, not floating point, or of different dtypes.
        ValueError: not 4-D, on different devices, sizes that disagree, ``Hkv`` not dividing
            ``Hq``, or (with ``same_head_dim``) ``D != Dk``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{what}{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.dim() != 4:
            raise ValueError(
                f"{what}{name} must have 4 dims (batch, heads, length, dim), got shape "
                f"{tuple(t.shape)}"
                + (f"; for (batch, length, dim) use {name}.unsqueeze(1)" if t.dim() == 3 else "")
            )
    assert isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{what}q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(
            f"{what}q, k, v must be on one device, got {q.device}, {k.device}, {v.device}"
        )
    (b, hq, lq, d), (bk, hk, lk, dk), (bv, hv, lv, dv) = q.shape, k.shape, v.shape
    sizes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if not (b == bk == bv):
        raise ValueError(f"{what}q, k, v must have the same batch size, got {sizes}")
    if hk != hv or lk != lv:
        raise ValueError(f"{what}k and v must have the same heads and length, got {sizes}")
    if hk == 0 or hq % hk:
        raise ValueError(
            f"{what}k's heads must divide q's heads (grouped-query attention), got {sizes}"
        )
    if same_head_dim and d != dk:
        raise ValueError(f"{what}q and k must have the same head dim, got {sizes}")
    return b, hq, hk, lq, lk, d, dk, dv


def band_covers(
    first: int, last: int, k0: int, k1: int, left: int | None, right: int | None
) -> bool:
    """Whether keys ``k0 .. k1 − 1`` lie in the band ``p − left .. p + right`` of every query
    position ``p`` in ``first .. last`` (``None``: that side unbounded), so the band hides
    nothing there. With symbolic sizes (under ``torch.export``) only what holds for every
    size counts: the traced graph keeps the mask rather than guard on the length."""
    return (left is None or statically_known_true(k0 - last >= -left)) and (
        right is None or statically_known_true(k1 - 1 - first <= right)
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
