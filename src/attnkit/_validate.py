"""Argument checks shared by the functional API, ring attention, the layers, models, data and
tasks."""

from __future__ import annotations

import torch
from torch import Tensor


def check_positive_ints(**values: object) -> None:
    """Raise ``ValueError`` naming the first of ``values`` that is not an ``int`` ≥ 1 (a
    ``bool`` is not an int here)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_positive_fields(obj: object, names: tuple[str, ...]) -> None:
    """:func:`check_positive_ints` of the attributes ``names`` of ``obj`` (a config)."""
    check_positive_ints(**{name: getattr(obj, name) for name in names})


def check_qkv(
    q: object, k: object, v: object, *, same_head_dim: bool = False, what: str = ""
) -> tuple[int, int, int, int, int, int, int, int]:
    """``(B, Hq, Hkv, Lq, Lk, D, Dk, Dv)`` of ``q (B, Hq, Lq, D)``, ``k (B, Hkv, Lk, Dk)``,
    ``v (B, Hkv, Lk, Dv)``; ``what`` prefixes every message (``"ring_attention: "``).

    Raises:
        TypeError: not tensors, not dense (sparse or mkldnn layouts), not floating point, or of
            different dtypes.
        ValueError: not 4-D, on different devices, sizes that disagree, ``Hkv`` not dividing
            ``Hq``, or (with ``same_head_dim``) ``D != Dk``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise TypeError(
                f"{what}{name} must be a dense (strided) tensor, got layout {t.layout}; use "
                f"{name}.to_dense()"
            )
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
            f"{what}k's heads must divide q's heads (grouped-query attention), got {sizes}; "
            "the layout is (batch, heads, length, dim): tensors laid out as (batch, length, "
            "heads, dim) need .transpose(1, 2)"
        )
    if same_head_dim and d != dk:
        raise ValueError(f"{what}q and k must have the same head dim, got {sizes}")
    return b, hq, hk, lq, lk, d, dk, dv


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
