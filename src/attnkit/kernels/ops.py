"""The block kernels as custom operators, so that ``torch.compile`` takes them whole.

``chunked``, ``local`` and ``additive`` walk tiles in Python: which tiles exist depends on the
sizes and on the values of the key lengths (tiles past a sequence's end are skipped), so the
loop cannot be traced into a graph that holds for every input. Under ``torch.compile`` each
of them therefore runs as one opaque operator, ``attnkit::block_attention``, whose eager
implementation is the kernel itself; a fake implementation gives the output shapes to the
compiler (any batch and length, no recompilation) and a registered autograd formula calls
``attnkit::block_attention_backward``, the kernel's own FlashAttention-2 backward
(``torch.library.custom_op``, ``register_fake``, ``register_autograd``). ``sdpa`` and
``reference`` stay traceable, so inductor fuses them with the surrounding code.

What crosses the operator is tensors and numbers only: the prepared inputs, the
:class:`~attnkit.kernels.visibility.Visibility`'s tensors and band, the attention sinks
(``softmax_with_sinks``: the plan's ``(B, Hq, Lq)`` as it is, usually a broadcast view of the
user's ``(Hq,)``; an operator may read a view, it only must not write or return one. One
shape serves every form of sinks the user may give (per head, per query), no copy is made
before the kernel lays the sinks out its own way, and autograd sums the ``(B, Hq, Lq)``
gradient the operator returns back into the user's tensor through the view), the scale,
dropout (with its seed as a tensor, so the compiled graph draws a new one each call and the
backward regenerates the forward's masks) and which outputs are wanted. Python callables
cannot cross it: under ``torch.compile`` a ``mask_mod``'s block mask or a ``score_mod`` is
served by the traceable kernels (``reference``, ``sdpa`` for block masks), and the block
kernels say so when forced.

A kernel plugs in with :func:`register_op_kernel`: ``forward(inputs, plan) -> [out, lse,
weights]`` and ``backward(grads, inputs, outputs, plan, bias_grad, sink_grad) -> [*input
grads, dbias, dsinks]``, in the compute dtype and the user layout; an output or gradient not
asked for is an empty tensor. With sinks the forward's ``lse`` includes them and is always
returned (the backward pass reads it: ``P' = exp(S − lse')``, the sinks' gradient
``−D · p_sink``).

Shapes: inputs ``[q (B, Hq, Lq, ·), ..., v (B, Hkv, Lk, Dv)]``, sinks ``(B, Hq, Lq)`` or
``None`` -> ``out (B, Hq, Lq, Dv)``,
``lse (B, Hq, Lq)`` (or empty), ``weights (B, Hq, Lq, Lk)`` (or empty).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.kernels.online import compute_dtype, from_rows
from attnkit.kernels.plan import AttentionPlan, Scoring, Shapes
from attnkit.kernels.visibility import Visibility

Forward = Callable[[list[Tensor], AttentionPlan], list[Tensor]]
Backward = Callable[
    [list["Tensor | None"], list[Tensor], list[Tensor], AttentionPlan, bool, bool], list[Tensor]
]


@dataclass(frozen=True)
class OpKernel:
    forward: Forward
    backward: Backward


_OP_KERNELS: dict[str, OpKernel] = {}
_UNBOUNDED = -1  # a band side without bound (window sides are >= 0)
# The Visibility's tensors, in the order the operators take them (the dropout seed last).
_VIS = ("shifts", "key_starts", "key_lengths", "query_lengths", "mask", "bias", "seed")
_BIAS = _VIS.index("bias")


def register_op_kernel(name: str, forward: Forward, backward: Backward) -> None:
    """Let ``attnkit::block_attention`` run kernel ``name`` (see the module docstring)."""
    _OP_KERNELS[name] = OpKernel(forward, backward)


def empty(like: Tensor) -> Tensor:
    """The placeholder for an output or gradient not asked for."""
    return like.new_empty(0)


def user_layout(rows: tuple[Tensor | None, ...], batch: int, heads: int) -> list[Tensor]:
    """A kernel's ``(out, lse, weights)`` in the rows layout ``(B·Hkv, G·Lq, ·)`` as the
    operator returns them: ``(B, Hq, Lq, ·)``, an absent one as :func:`empty`."""
    out = rows[0]
    assert out is not None
    return [empty(out) if t is None else from_rows(t, batch, heads) for t in rows]


def rows_layout(outputs: list[Tensor], kv_heads: int, dtype: torch.dtype) -> list[Tensor | None]:
    """The inverse of :func:`user_layout`: ``None`` for a placeholder."""
    out = outputs[0]
    n = out.shape[0] * kv_heads
    return [None if present(t) is None else t.to(dtype).reshape(n, -1, *t.shape[3:])
            for t in outputs]  # (B·Hkv, G·Lq[, ·])


def present(t: Tensor | None) -> Tensor | None:
    """``None`` for a placeholder (or a missing gradient), else ``t``."""
    return None if t is None or (t.numel() == 0 and t.dim() == 1) else t


def _plan(
    kernel: str, inputs: list[Tensor], vis_tensors: tuple[Tensor | None, ...],
    sinks: Tensor | None, band: list[int], scale: float, dropout_p: float, weights: bool,
    need_lse: bool,
) -> AttentionPlan:
    """The plan a block kernel reads, rebuilt from the operator's arguments."""
    q, k, v = inputs[0], inputs[1], inputs[-1]
    given = dict(zip(_VIS, vis_tensors, strict=True))
    seed = given.pop("seed")
    (b, hq, lq, d), (hkv, lk) = q.shape, v.shape[1:3]
    left, right = (None if x == _UNBOUNDED else x for x in band[:2])
    offset = band[2]  # any integer (negative when Lq > Lk)
    vis = Visibility(
        batch=b, heads=hq, q_len=lq, kv_len=lk, device=q.device, left=left, right=right,
        offset=offset, **given,
    )
    return AttentionPlan(
        shapes=Shapes(b, hq, hkv, lq, lk, d, k.shape[-1], v.shape[-1]),
        dtype=v.dtype,
        device=q.device,
        score=Scoring(name=kernel, fn=_no_scores, params={}, scale=scale),
        normalizer="softmax" if sinks is None else "softmax_with_sinks",
        normalize=_no_scores,
        visibility=vis,
        dropout_p=dropout_p,
        return_weights=weights,
        needs_grad=need_lse,  # what chunked reads it for: whether to keep the lse
        sinks=sinks,
        dropout_seed=None if seed is None else int(seed),
    )


def _no_scores(*args: object) -> Tensor:
    raise RuntimeError("a block kernel run as a custom operator makes its own scores")


@torch.library.custom_op("attnkit::block_attention", mutates_args=())
def block_attention(
    kernel: str,
    inputs: list[Tensor],
    shifts: Tensor | None,
    key_starts: Tensor | None,
    key_lengths: Tensor | None,
    query_lengths: Tensor | None,
    mask: Tensor | None,
    bias: Tensor | None,
    seed: Tensor | None,
    sinks: Tensor | None,
    band: list[int],
    scale: float,
    dropout_p: float,
    weights: bool,
    need_lse: bool,
) -> list[Tensor]:
    """Block kernel ``kernel`` on ``inputs``: ``[out, lse, weights]`` (module docstring)."""
    vis_tensors = (shifts, key_starts, key_lengths, query_lengths, mask, bias, seed)
    plan = _plan(kernel, inputs, vis_tensors, sinks, band, scale, dropout_p, weights, need_lse)
    # Contiguous, as the fake implementation promises the compiler.
    return [t.contiguous() for t in _OP_KERNELS[kernel].forward(list(inputs), plan)]


@block_attention.register_fake
def _(kernel, inputs, shifts, key_starts, key_lengths, query_lengths, mask, bias, seed, sinks,
      band, scale, dropout_p, weights, need_lse):
    q, v = inputs[0], inputs[-1]
    b, hq, lq = q.shape[:3]
    cd = compute_dtype(v.dtype)
    out = q.new_empty(b, hq, lq, v.shape[3], dtype=cd)  # (B, Hq, Lq, Dv)
    lse = q.new_empty((b, hq, lq) if need_lse else (0,), dtype=cd)  # (B, Hq, Lq)
    w = q.new_empty((b, hq, lq, v.shape[2]) if weights else (0,), dtype=cd)  # (B, Hq, Lq, Lk)
    return [out, lse, w]


@torch.library.custom_op("attnkit::block_attention_backward", mutates_args=())
def block_attention_backward(
    kernel: str, grads: list[Tensor | None], inputs: list[Tensor], outputs: list[Tensor],
    visibility: list[Tensor | None], sinks: Tensor | None, band: list[int], scale: float,
    dropout_p: float, weights: bool, need_lse: bool, bias_grad: bool, sink_grad: bool,
) -> list[Tensor]:
    """The gradients of :func:`block_attention`: one per input, then the bias's and the
    sinks' ``(B, Hq, Lq)`` (each empty when not asked for). ``visibility`` holds its tensors
    in the order of ``_VIS``."""
    vis_tensors = tuple(visibility)
    bias = vis_tensors[_BIAS]
    plan = _plan(kernel, inputs, vis_tensors, sinks, band, scale, dropout_p, weights, need_lse)
    found = _OP_KERNELS[kernel].backward(list(grads), list(inputs), list(outputs), plan,
                                         bias_grad, sink_grad)
    like = [*inputs, bias if bias_grad and bias is not None else found[-2],
            sinks if sink_grad and sinks is not None else found[-1]]
    found = [g.to(t.dtype) for g, t in zip(found, like, strict=True)]  # each input's dtype
    return [g.clone() if any(g is t for t in (*inputs, *outputs)) else g.contiguous()
            for g in found]


@block_attention_backward.register_fake
def _(kernel, grads, inputs, outputs, visibility, sinks, band, scale, dropout_p, weights,
      need_lse, bias_grad, sink_grad):
    bias = visibility[_BIAS]
    found = [torch.empty_like(t, memory_format=torch.contiguous_format) for t in inputs]
    return [*found, bias.new_empty(bias.shape) if bias_grad and bias is not None else
            empty(inputs[0]), sinks.new_empty(sinks.shape) if sink_grad and sinks is not None
            else empty(inputs[0])]


_ARGS = ("kernel", "inputs", *_VIS, "sinks", "band", "scale", "dropout_p", "weights",
         "need_lse")
_SETTINGS = _ARGS.index("band")  # the arguments from here on are settings, not tensors


def _setup_context(ctx, inputs, output) -> None:
    args = dict(zip(_ARGS, inputs, strict=True))
    vis = [args[name] for name in _VIS]
    ctx.save_for_backward(*args["inputs"], *output, *vis, args["sinks"])
    ctx.sizes = len(args["inputs"]), len(output)
    ctx.settings = tuple(args[name] for name in _ARGS[_SETTINGS:])
    ctx.kernel = args["kernel"]


def _backward(ctx, grads):
    saved = ctx.saved_tensors
    n_in, n_out = ctx.sizes
    inputs, outputs = saved[:n_in], saved[n_in : n_in + n_out]
    vis, sinks = saved[n_in + n_out : -1], saved[-1]
    bias_grad = bool(ctx.needs_input_grad[_ARGS.index("bias")]) and vis[_BIAS] is not None
    sink_grad = bool(ctx.needs_input_grad[_ARGS.index("sinks")]) and sinks is not None
    found = block_attention_backward(
        ctx.kernel, list(grads), list(inputs), list(outputs), list(vis), sinks, *ctx.settings,
        bias_grad, sink_grad,
    )
    grads_by_name = {"inputs": found[:-2], "bias": found[-2] if bias_grad else None,
                     "sinks": found[-1] if sink_grad else None}
    return tuple(grads_by_name.get(name) for name in _ARGS)


block_attention.register_autograd(_backward, setup_context=_setup_context)


def arguments(
    kernel: str, inputs: list[Tensor], plan: AttentionPlan, scale: float, need_lse: bool
) -> tuple:
    """:func:`block_attention`'s arguments for kernel ``kernel`` serving ``plan``."""
    vis = plan.visibility
    seed = None
    if plan.dropout_p > 0:  # drawn by the graph, so each compiled call drops anew
        seed = torch.randint(0, 2**62, (), device=plan.device)
    band = [*(_UNBOUNDED if x is None else x for x in (vis.left, vis.right)), vis.offset]
    tensors = [seed if name == "seed" else getattr(vis, name) for name in _VIS]
    return (kernel, inputs, *tensors, plan.sinks, band, scale, plan.dropout_p,
            plan.return_weights, need_lse)


def run(kernel: str, inputs: list[Tensor], plan: AttentionPlan, scale: float, *,
        need_lse: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Kernel ``kernel`` through the operator: ``(out, lse, weights)`` as a kernel returns
    them (``out``/``weights`` in the dtype of the values, ``lse`` float32 and including the
    plan's sinks, ``None`` where not asked for). ``inputs`` are the kernel's own (the first
    is the queries, the last the values)."""
    v = inputs[-1]
    out, lse, weights = block_attention(*arguments(kernel, inputs, plan, scale, need_lse))
    return (
        out.to(v.dtype),
        lse.float() if need_lse else None,
        weights.to(v.dtype) if plan.return_weights else None,
    )


def refuses(plan: AttentionPlan) -> str | None:
    """Why a block kernel cannot serve ``plan`` under ``torch.compile`` (else ``None``)."""
    if not torch.compiler.is_compiling():
        return None
    if plan.score.mod is not None:
        return ("under torch.compile, a score_mod runs in the traceable kernels (reference): "
                "a Python callable cannot cross the block kernels' custom operator")
    if plan.summary is not None:
        return ("under torch.compile, summaries of the weights are made by the traceable "
                "reference kernel: the block kernels' custom operator returns full weights only")
    if plan.visibility.block_mask is not None:
        return ("under torch.compile, a mask_mod's block mask runs in the traceable kernels "
                "(sdpa, reference): a Python callable cannot cross the block kernels' custom "
                "operator")
    return None


__all__ = [
    "arguments", "block_attention", "block_attention_backward", "register_op_kernel", "run",
]
