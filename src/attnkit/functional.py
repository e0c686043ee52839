"""``attnkit.attention()``: validate, build a plan, pick a kernel, return.

Shape legend: B batch, Hq query heads, Hkv key/value heads, Lq query length, Lk key length,
D query/key head dim, Dv value head dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal, overload

import torch
from torch import Tensor

from attnkit import flex, statistics
from attnkit import normalizers as normalizers_
from attnkit import scores as scores_
from attnkit._validate import check_qkv, check_window
from attnkit.checks import check_finite, checks_enabled
from attnkit.kernels import AttentionPlan, BlockMask, Dispatch, Shapes, Visibility, kernels, select
from attnkit.kernels.registry import remember, remembered
from attnkit.kernels.visibility import bottom_right, clip_band
from attnkit.key_lengths import KeyLengths
from attnkit.normalizers import Normalizer
from attnkit.scores import Score
from attnkit.torch_inputs import causal_bias, check_readable, refuse_nested

CAUSAL = (False, True, "bottom_right", "top_left")


MaskArg = Tensor | KeyLengths | BlockMask | Any | None

# The exact types of the arguments a remembered plan may be looked up by (see attention).
_EXACT_CAUSAL = (bool, str)
_EXACT_SCALE = (type(None), float, int)
_EXACT_NUMBER = (float, int)
_is_compiling = torch.compiler.is_compiling
_is_dynamo_compiling = torch.compiler.is_dynamo_compiling  # one Python frame, not two
_grad_enabled = torch.is_grad_enabled  # one attribute lookup less per call


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
    causal: bool | str = False,
    window: tuple[int, int] | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: statistics.ReturnWeights = False,
    backend: str = "auto",
    normalize: str | Normalizer = "softmax",
    mask_mod: Callable[..., Tensor] | None = None,
    score_mod: Callable[..., Tensor] | None = None,
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
            additive bias of such a shape; or :class:`KeyLengths`; or a block mask from
            :func:`attnkit.create_block_mask` or ``torch.nn.attention.flex_attention``'s; or
            PyTorch's ``causal_lower_right(Lq, Lk)`` (= ``causal=True``) /
            ``causal_upper_left(Lq, Lk)`` (= ``causal="top_left"``).
        causal: hide keys after each query's position. ``True``/``"bottom_right"``: query
            ``i`` sits at key position ``Lk - Lq + i`` (what a KV cache needs);
            ``"top_left"``: at position ``i`` (PyTorch's ``is_causal`` and ``CausalBias``).
            The same positions place the ``window``.
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
            :class:`Normalizer` (``gumbel_softmax``, ``multinoulli``, ``local_p``,
            ``softmax_with_sinks``: gpt-oss's attention sinks, a logit per query head in
            each softmax denominator).
        mask_mod: FlexAttention's ``mask_mod(b, h, q_idx, kv_idx) -> bool`` (True = may
            attend; indices of rows and keys, ``h`` the query head); its block table is built
            for this call (build it once with :func:`attnkit.create_block_mask` and pass it as
            ``mask`` to reuse it).
        score_mod: FlexAttention's ``score_mod(score, b, h, q_idx, kv_idx) -> score``, applied
            to the scaled score before the softmax, with its gradient (also to the tensors it
            reads).

    Returns:
        ``out (B, Hq, Lq, Dv)`` in the input dtype, or ``(out, weights)`` (``(out, summary)``).
        A query with no key to attend to gets output 0 and weights 0.

    Raises:
        TypeError: a non-tensor, non-floating or mixed dtypes, a mask of the wrong dtype, a
            nested tensor, a tensor subclass attnkit cannot read (named), a ``return_weights``
            that is none of the above, a ``causal`` that is not one of ``False, True,
            "bottom_right", "top_left"``, a ``mask_mod``/``score_mod`` of the wrong signature
            or result dtype.
        ValueError: wrong ranks, mismatched sizes or devices, a mask that does not broadcast,
            :class:`KeyLengths` outside ``0..Lk`` (read where they are on the CPU),
            a ``mask_mod``/``score_mod`` whose result does not broadcast over its indices,
            an unknown score/normalizer/backend, or a backend that cannot serve the request.
    """
    signature = None
    # A call without masks whose arguments all have exact plain types (so equal signatures
    # mean equal requests: ``causal=1`` is refused where ``causal=True`` is not) is looked up
    # by its signature, which holds everything the plan and the choice of kernel depend on.
    # Never a tensor subclass (a nested tensor, or a FakeTensor of torch.export and AOT
    # tracing), nor while Dynamo traces (a traced graph must not depend on this memory); with
    # the NaN/Inf checks on the memory stays empty (set_checks forgets it, and nothing is
    # remembered while they are on). Inline, not a helper: in a 1-token call each Python
    # frame and tensor attribute read costs a visible share of the call.
    if (
        mask is None and window is None and mask_mod is None and score_mod is None
        and type(q) is Tensor and type(k) is Tensor and type(v) is Tensor
        and type(score) is str and type(normalize) is str and type(backend) is str
        and type(causal) in _EXACT_CAUSAL and type(scale) in _EXACT_SCALE
        and type(dropout_p) in _EXACT_NUMBER and type(return_weights) is bool
        and not _is_dynamo_compiling()
    ):
        try:
            signature = (
                q.shape, k.shape, v.shape, q.dtype, k.dtype, v.dtype,
                # CPU tensors have no device index: all on CPU says every device.
                True if q.is_cpu and k.is_cpu and v.is_cpu else (q.device, k.device, v.device),
                _grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad),
                score, causal, scale, dropout_p, return_weights, backend, normalize,
            )
        except RuntimeError:  # a nested tensor has no sizes: validation names it
            pass
        else:
            answer = remembered(signature)
            if answer is not None:
                try:
                    return answer(q, k, v)
                except Exception:  # what the signature does not hold (a sparse layout,
                    pass  # ...): the full path below names it, or fails alike
    return _validate_and_attend(
        q, k, v, score=score, mask=mask, causal=causal, window=window, scale=scale,
        dropout_p=dropout_p, return_weights=return_weights, backend=backend,
        normalize=normalize, mask_mod=mask_mod, score_mod=score_mod, signature=signature,
    )


def _validate_and_attend(
    q: Tensor, k: Tensor, v: Tensor, *, score: str | Score, mask: MaskArg, causal: bool | str,
    window: tuple[int, int] | None, scale: float | None, dropout_p: float,
    return_weights: statistics.ReturnWeights, backend: str, normalize: str | Normalizer,
    mask_mod: Callable[..., Tensor] | None, score_mod: Callable[..., Tensor] | None,
    signature: tuple[Any, ...] | None,
) -> Tensor | tuple[Tensor, Any]:
    """:func:`attention` the whole way: validate, build the plan, dispatch, run; the plan and
    the kernel chosen are remembered under ``signature`` (when it is not ``None``)."""
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
        return_weights=return_weights,
        normalize=normalize,
        mask_mod=mask_mod,
        score_mod=score_mod,
    )
    if plan.shapes.q_len == 0 or plan.shapes.kv_len == 0:
        return _empty(q, k, v, plan)
    name = _dispatch(plan, backend).kernel
    checking = checks_enabled()
    if signature is None or checking or _is_compiling():
        answer = kernels()[name].answer(plan)
    else:
        answer = remember(signature, name, plan)
    if not checking:
        return answer(q, k, v)
    check_finite("attnkit.attention", q=q, k=k, v=v)
    result = answer(q, k, v)
    out = result[0] if isinstance(result, tuple) else result
    check_finite(f"attnkit.attention (kernel {name!r})", output=out)
    return result


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
    if plan.summary is not None:
        return out, statistics.reduce(weights, plan.summary)
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
    causal: bool | str = False,
    window: tuple[int, int] | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: statistics.ReturnWeights = False,
    normalize: str | Normalizer = "softmax",
    mask_mod: Callable[..., Tensor] | None = None,
    score_mod: Callable[..., Tensor] | None = None,
) -> AttentionPlan:
    """Validate :func:`attention`'s arguments and resolve them into an :class:`AttentionPlan`."""
    return_weights = statistics.resolve(return_weights)
    refuse_nested(q=q, k=k, v=v, mask=mask)
    b, hq, hk, lq, lk, dq, dk, dv = check_qkv(q, k, v)
    sizes = f"q {_shape(q)}, k {_shape(k)}, v {_shape(v)}"
    if hq == 0:
        raise ValueError(f"q must have at least one head, got {sizes}")

    scoring = _resolve_score(score, scale, dq)
    info = scores_.SCORES[scoring.name]
    if info.same_dim and dq != dk:
        raise ValueError(
            f"q and k must have the same head dim for score {scoring.name!r}, got {sizes}"
        )
    scores_.check_params(scoring.name, scoring.params, dq, dk, hq)
    for key, p in scoring.params.items():
        if p.device != q.device:
            raise ValueError(
                f"score parameter {key!r} is on {p.device} but q, k, v are on {q.device}"
            )
    normalizer_name, normalize_fn = normalizers_.resolve(normalize)
    sinks = None
    if isinstance(normalize, Normalizer) and normalizer_name == "softmax_with_sinks":
        sinks = normalizers_.sink_rows(normalize.params["sinks"], (b, hq, lq))  # (B, Hq, Lq)
        if sinks.device != q.device:
            raise ValueError(f"sinks are on {sinks.device} but q, k, v are on {q.device}")

    if not isinstance(causal, bool) and not (isinstance(causal, str) and causal in CAUSAL):
        got = repr(causal) if isinstance(causal, str) else type(causal).__name__
        raise TypeError(f"causal must be a bool, 'bottom_right' or 'top_left', got {got}")
    mask, causal = causal_bias(mask, causal, lq, lk, q.device)
    window = check_window(window)
    if not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a number in [0, 1), got {dropout_p!r}")

    if score_mod is not None:
        # Traced, the checks (inspect.signature, a walk of the autograd graph) cannot run; the
        # traceable kernels apply score_mod inside the graph, whose autograd reaches what it reads.
        leaves = () if _is_compiling() else flex.check_score_mod(
            score_mod, b, hq, lq, lk, q.dtype, q.device
        )
        scoring = replace(scoring, mod=score_mod, mod_leaves=leaves)
    visibility = _visibility(q, mask, causal, window, mask_mod, (b, hq, lq, lk))
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad
        for t in (q, k, v, *scoring.params.values(), *scoring.mod_leaves,
                  *([visibility.bias] if visibility.bias is not None else []),
                  *([sinks] if sinks is not None else []))
    )
    return AttentionPlan(
        shapes=Shapes(b, hq, hk, lq, lk, dq, dk, dv),
        dtype=q.dtype,
        device=q.device,
        score=scoring,
        normalizer=normalizer_name,
        normalize=normalize_fn,
        visibility=visibility,
        dropout_p=float(dropout_p),
        return_weights=return_weights is True,
        needs_grad=needs_grad,
        summary=statistics.check_summary(return_weights, lk),
        sinks=sinks,
    )


def _visibility(
    q: Tensor, mask: MaskArg, causal: bool | str, window: tuple[int, int] | None,
    mask_mod: Callable[..., Tensor] | None, target: tuple[int, int, int, int],
) -> Visibility:
    """The call's :class:`Visibility` from the user's mask arguments."""
    b, hq, lq, lk = target
    block_mask = flex.as_block_mask(mask, b, hq, lq, lk, q.device)
    if block_mask is not None:
        if mask_mod is not None:
            raise ValueError(
                "mask_mod: the block mask passed as mask carries its own mask_mod; combine "
                "them with attnkit.and_masks into one create_block_mask"
            )
        mask = None
    elif mask_mod is not None and _is_compiling():  # classifying blocks would read values
        block_mask = BlockMask.unclassified(mask_mod, (lq, lk), (128, 128), q.device)
    elif mask_mod is not None:
        flex.check_mask_mod(mask_mod, b, hq, lq, lk, q.device)
        block_mask = flex.build_block_mask(mask_mod, b, hq, (lq, lk), (128, 128), q.device)
    user_mask, bias, lengths = _split_mask(mask, q, target)
    left, right = clip_band(causal is not False, window)
    offset = 0 if causal == "top_left" else bottom_right(lq, lk)
    shifts = query_lengths = None
    if lengths is not None and lengths.align == "end":
        if causal == "top_left":
            raise ValueError(
                "causal='top_left' places query i at key position i; KeyLengths(align='end') "
                "aligns each sequence bottom-right: choose one"
            )
        query_lengths = lengths.query_lengths
        if (query_lengths is not None and not _is_compiling()  # traced: the values unknown
                and bool(((query_lengths < 0) | (query_lengths > lq)).any())):
            raise ValueError(
                f"mask: KeyLengths query_lengths must lie in 0..Lq = {lq}, got "
                f"{query_lengths.tolist()}"
            )
        own = lq if query_lengths is None else query_lengths
        shifts = lengths.lengths.clamp(0, lk) - own - offset  # (B,)
    return Visibility(
        batch=b, heads=hq, q_len=lq, kv_len=lk, device=q.device, left=left, right=right,
        offset=offset, shifts=shifts, key_starts=None if lengths is None else lengths.starts,
        key_lengths=None if lengths is None else lengths.lengths,
        query_lengths=query_lengths, mask=user_mask, bias=bias, block_mask=block_mask,
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


def _few(t: Tensor, most: int = 8) -> str:
    """The first ``most`` values of a 1-D tensor, for an error message."""
    more = f" ... ({t.numel()} values)" if t.numel() > most else ""
    return f"{t[:most].tolist()}{more}"


def _split_mask(
    mask: MaskArg, q: Tensor, target: tuple[int, int, int, int]
) -> tuple[Tensor | None, Tensor | None, KeyLengths | None]:
    """``mask`` as ``(bool_mask_4d, float_bias_4d, key_lengths)``; two of them are None."""
    if mask is None:
        return None, None, None
    if isinstance(mask, KeyLengths):  # query_lengths, if any, has as many entries
        lengths = mask.lengths
        if lengths.shape[0] != target[0]:
            raise ValueError(
                f"mask: KeyLengths has {lengths.shape[0]} entries but the batch is {target[0]}"
            )
        for t in (lengths, mask.starts, mask.query_lengths):
            if t is not None and t.device != q.device:
                raise ValueError(f"mask: KeyLengths are on {t.device} but q is on {q.device}")
        # read on CPU only (0.5 µs at B = 2): on a GPU it would wait for the device each call,
        # and under torch.compile the values are not known
        readable = lengths.device.type == "cpu" and not torch.compiler.is_compiling()
        values = lengths.tolist() if readable else []
        if values and (min(values) < 0 or max(values) > target[3]):
            raise ValueError(
                f"mask: KeyLengths lengths must be in 0..Lk = 0..{target[3]} (the number of "
                f"keys), got {_few(lengths)}"
            )
        return None, None, mask
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"mask must be a bool/float tensor, KeyLengths or a block mask, got "
            f"{type(mask).__name__}"
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
        padding = mask.dim() == 2 and tuple(mask.shape) == (target[0], target[3])
        raise ValueError(
            f"mask of shape {_shape(mask)} does not broadcast to (batch, heads, Lq, Lk) = {target}"
            f" {names}"
            + ("; a (batch, Lk) key padding mask needs mask[:, None, None, :] (True = may "
               "attend), or pass mask=attnkit.KeyLengths(lengths)" if padding else "")
        )
    mask4 = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, H|1, Lq|1, Lk|1)
    if mask4.dtype == torch.bool:
        return mask4.expand(*mask4.shape[:2], target[2], target[3]), None, None
    return None, mask4, None
