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
) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    """``(out (B, Hq, Lq, Dv), statistic)`` for arguments already validated by
    :func:`attnkit.attention`, which passes ``attend`` (itself with ``return_weights=True``).

    Queries are cut into blocks of rows (each query's weights depend only on its own row, its
    position and the mask); with ``causal`` a block's keys stop after its last query, which
    keeps the bottom-right alignment of every row. The statistic is detached.

    Raises:
        ValueError: ``TopK(k)`` with ``k`` larger than the number of keys.
    """
    b, hq, lq, _ = q.shape
    lk = k.shape[2]
    if isinstance(summary, TopK) and summary.k > lk:
        raise ValueError(f"return_weights=TopK({summary.k}) needs k ≤ Lk, got Lk = {lk}")
    rows = max(1, _BLOCK_ELEMENTS // max(1, b * hq * lk))
    if window is not None or normalize not in _ROW_LOCAL_NORMALIZERS or rows >= lq:
        out, weights = attend(q, k, v, mask)
        return out, _detached(reduce(weights, summary))
    outs: list[Tensor] = []
    parts: list[Tensor | tuple[Tensor, Tensor]] = []
    totals: Tensor | None = None
    for q0 in range(0, lq, rows):
        q1 = min(q0 + rows, lq)
        stop = lk - (lq - q1) if causal else lk  # keys after the block's last query are hidden
        if stop > 0:
            out, weights = attend(
                q[:, :, q0:q1], k[:, :, :stop], v[:, :, :stop], _rows(mask, lq, lk, q0, q1, stop)
            )  # out (B, Hq, n, Dv), weights (B, Hq, n, stop)
        else:  # these queries see no key at all: output 0, weights 0
            out = q.new_zeros(b, hq, q1 - q0, v.shape[-1])  # (B, Hq, n, Dv)
            weights = q.new_zeros(b, hq, q1 - q0, 0)  # (B, Hq, n, 0)
        outs.append(out)
        if summary == "key_totals":
            block = reduce(weights, summary)  # (B, Hq, stop)
            totals = block.new_zeros(b, hq, lk) if totals is None else totals  # (B, Hq, Lk)
            totals[..., : block.shape[-1]] += block  # type: ignore[union-attr]
        else:
            padded = torch.nn.functional.pad(weights, (0, lk - weights.shape[-1]))  # hidden: 0
            parts.append(reduce(padded, summary))  # (B, n, Lk) or ((B, Hq, n, k) x 2)
    out = torch.cat(outs, dim=2)  # (B, Hq, Lq, Dv)
    if totals is not None:
        return out, totals.detach()
    if isinstance(summary, TopK):
        values = torch.cat([p[0] for p in parts], dim=2)  # (B, Hq, Lq, k)
        indices = torch.cat([p[1] for p in parts], dim=2)  # (B, Hq, Lq, k)
        return out, (values.detach(), indices)
    return out, torch.cat(parts, dim=1).detach()  # type: ignore[arg-type]  # (B, Lq, Lk)


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
