"""Summaries of the attention weights that :func:`attnkit.attention` returns instead of the
full ``(B, Hq, Lq, Lk)`` tensor: ``return_weights="heads_mean"``, ``"key_totals"`` or
``attnkit.TopK(k)``.

- ``"heads_mean"``: ``(B, Lq, Lk)``, the average over query heads (what
  ``torch.nn.MultiheadAttention`` returns by default);
- ``"key_totals"``: ``(B, Hq, Lk)`` float32 (at least), ``Σ_i P_ij``, the attention each key
  receives from all the queries (the heavy-hitter statistic of H2O, Zhang et al. 2023);
- ``TopK(k)``: ``(values, indices)``, each ``(B, Hq, Lq, k)``, each query's ``k`` largest
  weights and their key indices (descending; ties and zero weights in any order).

Masks, ``causal`` and ``window`` are respected, since the summaries reduce the exact weights.
They are forward-only: **no gradient flows through a statistic** (the output keeps its own).

How they are computed today (the seam): :func:`summarise` is the one function that makes them,
and it does so by reducing the exact weights of the weights path, one block of queries at a
time where the geometry allows it (no ``window``, a built-in normalizer), so only about
``_BLOCK_ELEMENTS`` weights exist at once; otherwise from the whole weights tensor. An
in-kernel version (each tile reduced from its final log-sum-exp inside the online-softmax
loop) replaces the body of :func:`summarise` without changing its contract.

Shape legend: B batch, Hq query heads, Hkv key/value heads, Lq queries, Lk keys, k top keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

SUMMARIES = ("heads_mean", "key_totals")
_BLOCK_ELEMENTS = 1 << 22  # weights materialised at once when the queries are blocked
_ROW_LOCAL_NORMALIZERS = ("softmax", "sparsemax", "hardmax")  # each row from its own scores


@dataclass(frozen=True)
class TopK:
    """Ask :func:`attnkit.attention` for each query's ``k`` largest weights and their key
    indices, ``(values, indices)`` of shape ``(B, Hq, Lq, k)``.

    Raises:
        TypeError/ValueError: ``k`` not a positive integer.
    """

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise TypeError(f"TopK: k must be a positive integer, got {type(self.k).__name__}")
        if self.k < 1:
            raise ValueError(f"TopK: k must be a positive integer, got {self.k}")


Summary = str | TopK
ReturnWeights = bool | Summary
#: ``attend(q, k, v, mask) -> (out, weights)``: :func:`attnkit.attention` with every other
#: argument fixed and ``return_weights=True``
Attend = Callable[[Tensor, Tensor, Tensor, object], tuple[Tensor, Tensor]]


def resolve(return_weights: object) -> ReturnWeights:
    """Check ``return_weights``: ``True``, ``False``, ``"heads_mean"``, ``"key_totals"`` or a
    :class:`TopK`; returned unchanged.

    Raises:
        TypeError: anything of another type (a truthy object does not mean ``True``).
        ValueError: an unknown name.
    """
    if isinstance(return_weights, (bool, TopK)):
        return return_weights
    expected = "True, False, 'heads_mean', 'key_totals' or attnkit.TopK(k)"
    if isinstance(return_weights, str):
        if return_weights in SUMMARIES:
            return return_weights
        raise ValueError(f"return_weights must be {expected}, got {return_weights!r}")
    raise TypeError(f"return_weights must be {expected}, got {type(return_weights).__name__}")


def reduce(weights: Tensor, summary: Summary) -> Tensor | tuple[Tensor, Tensor]:
    """The summary of exact weights ``(B, Hq, Lq, Lk)`` (see the module docstring)."""
    if isinstance(summary, TopK):
        top = torch.topk(weights, summary.k, dim=-1)
        return top.values, top.indices  # (B, Hq, Lq, k) each
    precise = torch.promote_types(weights.dtype, torch.float32)
    if summary == "heads_mean":
        return weights.mean(dim=1, dtype=precise).to(weights.dtype)  # (B, Lq, Lk)
    return weights.sum(dim=2, dtype=precise)  # (B, Hq, Lk)


def summarise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    summary: Summary,
    *,
    mask: object,
    causal: bool,
    window: tuple[int, int] | None,
    normalize: object,
    attend: Attend,
    by_rows: bool = True,
) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    """``(out (B, Hq, Lq, Dv), statistic)`` for arguments already validated by
    :func:`attnkit.attention`, which passes ``attend`` (itself with ``return_weights=True``).

    Queries are cut into blocks of rows (each query's weights depend only on its own row, its
    position and the mask); with ``causal`` a block's keys stop after its last query, which
    keeps the bottom-right alignment of every row. ``by_rows=False`` when a block alone would
    not say what its rows see (their indices or alignment matter). The statistic is detached.

    Raises:
        ValueError: ``TopK(k)`` with ``k`` larger than the number of keys.
    """
    b, hq, lq, _ = q.shape
    lk = k.shape[2]
    if isinstance(summary, TopK) and summary.k > lk:
        raise ValueError(f"return_weights=TopK({summary.k}) needs k ≤ Lk, got Lk = {lk}")
    rows = max(1, _BLOCK_ELEMENTS // max(1, b * hq * lk))
    if not by_rows or window is not None or normalize not in _ROW_LOCAL_NORMALIZERS or rows >= lq:
        out, weights = attend(q, k, v, mask)
        return out, _detached(reduce(weights, summary))
    out = q.new_zeros(b, hq, lq, v.shape[-1])  # (B, Hq, Lq, Dv)
    stat = _empty_summary(summary, q, lq, lk)
    for q0 in range(0, lq, rows):
        q1 = min(q0 + rows, lq)
        stop = lk - (lq - q1) if causal else lk  # keys after the block's last query are hidden
        if stop <= 0:  # these queries see no key at all: output 0, weights 0
            continue
        block_out, weights = attend(
            q[:, :, q0:q1], k[:, :, :stop], v[:, :, :stop], _rows(mask, lq, lk, q0, q1, stop)
        )  # (B, Hq, n, Dv), (B, Hq, n, stop)
        out[:, :, q0:q1] = block_out
        if isinstance(stat, tuple):  # TopK: hidden keys weigh 0
            padded = torch.nn.functional.pad(weights, (0, max(0, stat[0].shape[-1] - stop)))
            values, indices = reduce(padded, summary)  # (B, Hq, n, k) each
            stat[0][:, :, q0:q1], stat[1][:, :, q0:q1] = values, indices
        elif summary == "key_totals":
            stat[..., :stop] += reduce(weights, summary)  # (B, Hq, stop)
        else:
            stat[:, q0:q1, :stop] = reduce(weights, summary)  # (B, n, stop)
    return out, _detached(stat)


def _empty_summary(
    summary: Summary, q: Tensor, lq: int, lk: int
) -> Tensor | tuple[Tensor, Tensor]:
    """Zeros of the summary's shape: what a query without keys contributes."""
    b, hq = q.shape[:2]
    if summary == "key_totals":
        return q.new_zeros(b, hq, lk, dtype=torch.promote_types(q.dtype, torch.float32))
    if summary == "heads_mean":
        return q.new_zeros(b, lq, lk)  # (B, Lq, Lk)
    assert isinstance(summary, TopK)
    k = summary.k
    indices = torch.arange(k, device=q.device).expand(b, hq, lq, k).clone()  # (B, Hq, Lq, k)
    return q.new_zeros(b, hq, lq, k), indices


def _rows(mask: object, lq: int, lk: int, q0: int, q1: int, stop: int) -> object:
    """The part of ``mask`` (a tensor broadcastable to ``(B, Hq, Lq, Lk)``, ``KeyLengths`` or
    ``None``) that covers queries ``q0:q1`` and keys ``:stop``."""
    if not isinstance(mask, Tensor):
        return mask  # None or KeyLengths: the same for every query
    m = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, H|1, Lq|1, Lk|1)
    if m.shape[2] == lq:
        m = m[:, :, q0:q1]
    if m.shape[3] == lk:
        m = m[..., :stop]
    return m


def _detached(stat: Tensor | tuple[Tensor, Tensor]) -> Tensor | tuple[Tensor, Tensor]:
    return (stat[0].detach(), stat[1]) if isinstance(stat, tuple) else stat.detach()
