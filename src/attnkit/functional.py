"""``attnkit.attention()``: validate, build a plan, pick a kernel, return.

Shape legend: B batch, Hq query heads, Hkv key/value heads, Lq query length, Lk key length,
D query/key head dim, Dv value head dim.
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import torch
from torch import Tensor

from attnkit import masks as masks_
from attnkit import normalizers as normalizers_
from attnkit import scores as scores_
from attnkit import statistics
from attnkit.checks import check_finite, checks_enabled
from attnkit.kernels import AttentionPlan, Dispatch, Shapes, kernels, select
from attnkit.kernels.plan import check_qkv, check_window
from attnkit.masks import MaskStructure
from attnkit.normalizers import Normalizer
from attnkit.scores import Score
from attnkit.torch_inputs import causal_bias, check_readable, refuse_nested


class KeyLengths:
    """Key padding given as lengths: key ``j`` of batch item ``b`` is real when ``j < lengths[b]``.

    Pass it as ``mask=KeyLengths(lengths)``; kernels can then skip padded blocks instead of
    reading a dense mask. ``lengths (B,)`` integer.
    """

    def __init__(self, lengths: Tensor) -> None:
        if not isinstance(lengths, Tensor):
            raise TypeError(f"KeyLengths: lengths must be a tensor, got {type(lengths).__name__}")
        if lengths.dim() != 1 or lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(
                f"KeyLengths: lengths must be a 1-D integer tensor (B,), got shape "
                f"{tuple(lengths.shape)} dtype {lengths.dtype}"
            )
        self.lengths = lengths.long()

    def __repr__(self) -> str:
        return f"KeyLengths({self.lengths.tolist()})"


MaskArg = Tensor | KeyLengths | None


@overload
def attention(
    q: Tensor, k: Tensor, v: Tensor, *, return_weights: Literal[False] = ..., **kw: Any
) -> Tensor: ...
@overload
def attention(
    q: Tensor, k: Tensor, v: Tensor, *, return_weights: Literal[True], **kw: Any
) -> tuple[Tensor, Tensor]: ...
@overload
def attention(
    q: Tensor, k: Tensor, v: Tensor, *, return_weights: statistics.Summary, **kw: Any
) -> tuple[Tensor, Any]: ...


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    score: str | Score = "scaled_dot",
    mask: MaskArg = None,
    causal: bool = False,
    window: tuple[int, int] | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: statistics.ReturnWeights = False,
    backend: str = "auto",
    normalize: str | Normalizer = "softmax",
) -> Tensor | tuple[Tensor, Any]:
    """Attend from queries to keys and return the weighted sum of the values.

    Args:
        q: queries ``(B, Hq, Lq, D)``, floating point.
        k: keys ``(B, Hkv, Lk, Dk)``; ``Hkv`` divides ``Hq`` (grouped-query attention).
            ``Dk == D`` except for parametrised scores (``general``, ``additive``, ...).
        v: values ``(B, Hkv, Lk, Dv)``.
        score: ``"scaled_dot"`` (default), ``"dot"``, ``"cosine"``, or a :class:`Score` with
            parameters: ``Score("general", weight=W)``, ``Score("additive", w_q=W, w_k=U, v=v)``,
            ``Score("concat", weight=W, v=v)``, ``Score("location", weight=W)``.
        mask: bool, **True = may attend**, broadcastable to ``(B, Hq, Lq, Lk)``; or a float
            additive bias of such a shape; or :class:`KeyLengths`; or PyTorch's
            ``causal_lower_right(Lq, Lk)`` (= ``causal=True``) / ``causal_upper_left(Lq, Lk)``.
        causal: hide keys after each query's position. Queries are aligned bottom-right: query
            ``i`` sits at key position ``Lk - Lq + i`` (what a KV cache needs).
        window: ``(left, right)``: the query at position ``p`` sees keys ``p-left .. p+right``.
        scale: multiplies the score; default ``1/√D`` for ``scaled_dot`` and 1 otherwise.
        dropout_p: dropout on the weights (applied whenever > 0; pass 0 at evaluation).
        return_weights: ``True``: also return the exact normalised weights
            ``(B, Hq, Lq, Lk)``. Or a summary of them without the full tensor (forward only,
            no gradient; see :mod:`attnkit.statistics`): ``"heads_mean"`` ``(B, Lq, Lk)``,
            ``"key_totals"`` ``(B, Hq, Lk)`` (each key's weight summed over the queries), or
            :class:`attnkit.TopK` ``(k)``: ``(values, indices)``, each ``(B, Hq, Lq, k)``.
        backend: ``"auto"`` or a registered kernel name (see :func:`explain_dispatch`).
        normalize: ``"softmax"`` (default), ``"sparsemax"``, ``"hardmax"``, or a
            :class:`Normalizer` (``gumbel_softmax``, ``multinoulli``, ``local_p``).

    Returns:
        ``out (B, Hq, Lq, Dv)`` in the input dtype, or ``(out, weights)`` (``(out, summary)``).
        A query with no key to attend to gets output 0 and weights 0.

    Raises:
        TypeError: a non-tensor, non-floating or mixed dtypes, a mask of the wrong dtype, a
            nested tensor, a tensor subclass attnkit cannot read (named), a ``return_weights``
            that is none of the above.
        ValueError: wrong ranks, mismatched sizes or devices, a mask that does not broadcast,
            an unknown score/normalizer/backend, or a backend that cannot serve the request.
    """
    summary = statistics.resolve(return_weights)
    plan = build_plan(
        q,
        k,
        v,
        score=score,
        mask=mask,
        causal=causal,
        window=window,
        scale=scale,
        dropout_p=dropout_p,
        return_weights=summary is not False,
        normalize=normalize,
    )
    if not isinstance(summary, bool):  # computed from blocks of the exact weights, for now
        mask, causal = causal_bias(mask, causal, plan.shapes.q_len, plan.shapes.kv_len, q.device)

        def attend(q_: Tensor, k_: Tensor, v_: Tensor, mask_: Any) -> tuple[Tensor, Tensor]:
            return attention(
                q_, k_, v_, score=score, mask=mask_, causal=causal, window=window, scale=scale,
                dropout_p=dropout_p, return_weights=True, backend=backend, normalize=normalize,
            )

        return statistics.summarise(
            q, k, v, summary, mask=mask, causal=causal, window=window, normalize=normalize,
            attend=attend,
        )
    if plan.shapes.q_len == 0 or plan.shapes.kv_len == 0:
        return _empty(q, k, v, plan)
    dispatch = _dispatch(plan, backend)
    if checks_enabled():
        check_finite("attnkit.attention", q=q, k=k, v=v)
    out, _lse, weights = kernels()[dispatch.kernel].fn(q, k, v, plan)
    if checks_enabled():
        check_finite(f"attnkit.attention (kernel {dispatch.kernel!r})", output=out)
    return (out, weights) if return_weights else out


def attention_weights(q: Tensor, k: Tensor, **kwargs: Any) -> Tensor:
    """Only the normalised weights ``(B, Hq, Lq, Lk)`` of :func:`attention` (same arguments)."""
    values = k[..., :1] if isinstance(k, Tensor) and k.dim() == 4 else k  # (B, Hkv, Lk, 1)
    return attention(q, k, values, return_weights=True, **kwargs)[1]


def explain_dispatch(
    q: Tensor, k: Tensor, v: Tensor, *, backend: str = "auto", **kwargs: Any
) -> Dispatch:
    """Which kernel :func:`attention` would run for these arguments, and why every other
    kernel was passed over. Takes exactly :func:`attention`'s arguments; raises as it does."""
    plan = build_plan(q, k, v, **kwargs)
    if plan.shapes.q_len == 0 or plan.shapes.kv_len == 0:
        return Dispatch(kernel=None, passed_over={"*": "empty input: output is all zeros"})
    return _dispatch(plan, backend)


def _dispatch(plan: AttentionPlan, backend: str) -> Dispatch:
    if not isinstance(backend, str) or (backend != "auto" and backend not in kernels()):
        raise ValueError(f"backend must be 'auto' or one of {list(kernels())}, got {backend!r}")
    dispatch = select(plan, backend)
    if dispatch.kernel is None:
        reasons = "; ".join(f"{name}: {why}" for name, why in dispatch.passed_over.items())
        raise ValueError(f"backend {backend!r} cannot serve this request ({reasons})")
    return dispatch


def _empty(q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan) -> Any:
    """Zero-length queries or keys: zero output (and weights), still connected to the graph."""
    s = plan.shapes
    out = q.new_zeros(s.batch, s.q_heads, s.q_len, s.value_dim)  # (B, Hq, Lq, Dv)
    if plan.needs_grad:
        out = out + 0.0 * (q.sum() + k.sum() + v.sum())
    weights = q.new_zeros(s.batch, s.q_heads, s.q_len, s.kv_len)  # (B, Hq, Lq, Lk)
    return (out, weights) if plan.return_weights else out


# ---------------------------------------------------------------------------------------------
# Validation: every message names the argument and the shapes seen.


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def build_plan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    score: str | Score = "scaled_dot",
    mask: MaskArg = None,
    causal: bool = False,
    window: tuple[int, int] | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    normalize: str | Normalizer = "softmax",
) -> AttentionPlan:
    """Validate :func:`attention`'s arguments and resolve them into an :class:`AttentionPlan`."""
    refuse_nested(q=q, k=k, v=v, mask=mask)
    b, hq, hk, lq, lk, dq, dk, dv = check_qkv(q, k, v)
    sizes = f"q {_shape(q)}, k {_shape(k)}, v {_shape(v)}"
    if hq == 0:
        raise ValueError(f"q must have at least one head, got {sizes}")

    score_name, score_fn, params, factor, dot_form = _resolve_score(score, scale, dq)
    info = scores_.SCORES[score_name]
    if info.same_dim and dq != dk:
        raise ValueError(
            f"q and k must have the same head dim for score {score_name!r}, got {sizes}"
        )
    scores_.check_params(score_name, params, dq, dk, hq)
    for key, p in params.items():
        if p.device != q.device:
            raise ValueError(
                f"score parameter {key!r} is on {p.device} but q, k, v are on {q.device}"
            )
    normalizer_name, normalize_fn = normalizers_.resolve(normalize)

    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    mask, causal = causal_bias(mask, causal, lq, lk, q.device)
    window = check_window(window)
    if not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a number in [0, 1), got {dropout_p!r}")

    user_mask, bias, key_lengths = _split_mask(mask, q, (b, hq, lq, lk))
    structure = MaskStructure(causal=causal, window=window, key_lengths=key_lengths)
    device = q.device

    def mask_block(q0: int, q1: int, k0: int, k1: int) -> Tensor | None:
        part = user_mask[..., q0:q1, k0:k1] if user_mask is not None else None
        return masks_.combine(structure.block(lq, lk, q0, q1, k0, k1, device), part)

    shapes = Shapes(b, hq, hk, lq, lk, dq, dk, dv)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, *params.values(), *([bias] if bias is not None else []))
    )
    return AttentionPlan(
        shapes=shapes,
        dtype=q.dtype,
        device=device,
        score_name=score_name,
        score=score_fn,
        score_params=params,
        dot_form=dot_form,
        normalizer_name=normalizer_name,
        normalize=normalize_fn,
        scale=factor,
        causal=causal,
        window=window,
        key_lengths=key_lengths,
        mask=user_mask,
        bias=bias,
        mask_block=mask_block,
        dropout_p=float(dropout_p),
        return_weights=bool(return_weights),
        needs_grad=needs_grad,
    )


def _resolve_score(score: str | Score, scale: float | None, dq: int):
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a number or None, got {type(scale).__name__}")
        if not math.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale}")
    if not isinstance(score, (str, Score)):
        raise TypeError(f"score must be a name or an attnkit.Score, got {type(score).__name__}")
    return scores_.resolve(score, scale, dq)



def _split_mask(
    mask: MaskArg, q: Tensor, target: tuple[int, int, int, int]
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """``mask`` as ``(bool_mask_4d, float_bias_4d, key_lengths)``; two of them are None."""
    if mask is None:
        return None, None, None
    if isinstance(mask, KeyLengths):
        lengths = mask.lengths
        if lengths.shape[0] != target[0]:
            raise ValueError(
                f"mask: KeyLengths has {lengths.shape[0]} entries but the batch is {target[0]}"
            )
        if lengths.device != q.device:
            raise ValueError(f"mask: KeyLengths are on {lengths.device} but q is on {q.device}")
        return None, None, lengths
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"mask must be a bool/float tensor or KeyLengths, got {type(mask).__name__}"
        )
    check_readable("mask", mask)
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(
            f"mask must be bool (True = may attend) or float (additive), got {mask.dtype}"
        )
    if mask.device != q.device:
        raise ValueError(f"mask is on {mask.device} but q is on {q.device}")
    names = ("batch", "heads", "Lq", "Lk")
    if mask.dim() > 4 or any(
        m not in (1, t) for m, t in zip(reversed(mask.shape), reversed(target), strict=False)
    ):
        raise ValueError(
            f"mask of shape {_shape(mask)} does not broadcast to (batch, heads, Lq, Lk) = {target}"
            f" {names}"
        )
    mask4 = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, H|1, Lq|1, Lk|1)
    if mask4.dtype == torch.bool:
        return mask4.expand(*mask4.shape[:2], target[2], target[3]), None, None
    return None, mask4, None
