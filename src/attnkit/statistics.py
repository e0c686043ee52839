"""Summaries of the attention weights that :func:`attnkit.attention` returns instead of the
full ``(B, Hq, Lq, Lk)`` tensor: ``return_weights="heads_mean"``, ``"key_totals"`` or
``attnkit.TopK(k)``.

- ``"heads_mean"``: ``(B, Lq, Lk)``, the average over query heads (what
  ``torch.nn.MultiheadAttention`` returns by default);
- ``"key_totals"``: ``(B, Hq, Lk)`` float32 (at least), ``Σ_i P_ij``, the attention each key
  receives from all the queries (the heavy-hitter statistic of H2O, Zhang et al. 2023);
- ``TopK(k)``: ``(values, indices)``, each ``(B, Hq, Lq, k)``, each query's ``k`` largest
  weights and their distinct key indices (descending; ties and zero weights in any order).

Masks, ``causal``, ``window``, key lengths, grouped heads, ``mask_mod`` and ``score_mod`` are
respected: the summaries reduce the exact weights. They are forward-only: **no gradient flows
through a statistic** (it is detached; the output keeps its own gradient).

The kernels that walk tiles (``chunked``, ``additive``) make them tile by tile from each
row's final log-sum-exp, and the full weights never exist
(:mod:`attnkit.kernels.summaries`): ``chunked`` in one pass where a tile can hold whole rows
(as many as fit in a few MiB), else, like ``additive``, in a second pass over the keys;
``chunked`` also with attention sinks (``softmax_with_sinks``: the weights the model uses, each
row summing to ``1 − p_sink``). The ``reference`` kernel, which serves any other normalizer or
score, reduces its full weights.
"""

from __future__ import annotations

from attnkit.kernels.summaries import Summary, TopK, reduce

__all__ = ["SUMMARIES", "ReturnWeights", "Summary", "TopK", "check_summary", "reduce", "resolve"]

SUMMARIES = ("heads_mean", "key_totals")
ReturnWeights = bool | Summary


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


def check_summary(return_weights: ReturnWeights, kv_len: int) -> Summary | None:
    """The summary ``return_weights`` asks for (``None``: none) for ``kv_len`` keys.

    Raises:
        ValueError: ``TopK(k)`` with ``k`` larger than the number of keys.
    """
    if isinstance(return_weights, bool):
        return None
    if isinstance(return_weights, TopK) and return_weights.k > kv_len:
        raise ValueError(f"return_weights=TopK({return_weights.k}) needs k ≤ Lk, got Lk = {kv_len}")
    return return_weights
