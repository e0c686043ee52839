"""The registry of attention kernels: one signature, declared capabilities, explicit dispatch.

Adding a backend is one new file in ``kernels/`` that defines its function and its
:class:`Kernel` (what it serves, when it declines), and one :func:`register` call in
``kernels/__init__.py``. Every kernel has the signature::

    fn(q, k, v, plan) -> (out, lse_or_None, weights_or_None)

with ``q (B, Hq, Lq, D)``, ``k (B, Hkv, Lk, D)``, ``v (B, Hkv, Lk, Dv)``, ``out (B, Hq, Lq, Dv)``
in the input dtype, ``lse (B, Hq, Lq)`` float32 (the log-sum-exp of each query's scores, or
``None``) and ``weights (B, Hq, Lq, Lk)`` (only when ``plan.return_weights``), or instead the
detached ``plan.summary`` of them (:mod:`attnkit.kernels.summaries`).

Small calls repeat: :func:`attnkit.attention` remembers the kernel chosen for a call without
masks under the call's signature (:func:`remember`), bound to its plan as an :data:`Answer`
(``Kernel.answer``; ``Kernel.bind`` when a kernel can take the plan's decisions once), so the
next call of that signature runs it without validating and dispatching again. Registering a
kernel forgets every choice.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from attnkit.kernels.plan import AttentionPlan

KernelOut = tuple[Tensor, "Tensor | None", "Tensor | None"]  # (out, lse, weights)
KernelFn = Callable[[Tensor, Tensor, Tensor, AttentionPlan], KernelOut]
# A kernel bound to one plan, returning what attention() returns: out (B, Hq, Lq, Dv), or
# (out, weights) when the plan asks for the weights or a summary of them.
Answer = Callable[[Tensor, Tensor, Tensor], Any]


@dataclass(frozen=True)
class Capabilities:
    """What a kernel can do. ``None`` for a set means "any"."""

    scores: frozenset[str] | None = None
    dot_product_scores: bool = False  # serves any score with a DotForm
    normalizers: frozenset[str] | None = None
    bool_mask: bool = True
    float_bias: bool = True
    band: bool = True  # causal and windows
    lengths: bool = True  # key/query lengths, per-sequence alignment
    mask_mod: bool = True
    score_mod: bool = True
    dropout: bool = True
    weights: bool = True
    summaries: bool = False  # "heads_mean", "key_totals", TopK(k) (plan.summary)
    grad: bool = True
    grouped_heads: bool = True
    dtypes: frozenset[torch.dtype] | None = None
    device_types: frozenset[str] | None = None
    # Anything the flags above cannot say; returns the reason the plan is refused, or None.
    extra: Callable[[AttentionPlan], str | None] | None = None
    # Traces under torch.export to standard ATen ops for any size (no Python control flow on
    # sizes or values), so an exported graph holds for every batch and length.
    exports: bool = False

    def refuses(self, plan: AttentionPlan) -> str | None:
        """The reason this kernel cannot serve ``plan``, or ``None`` if it can."""
        score, vis = plan.score, plan.visibility
        if self.dot_product_scores and score.dot is None:
            return f"score {score.name!r} is not a dot product"
        if self.scores is not None and score.name not in self.scores:
            return f"score {score.name!r} not supported"
        if self.normalizers is not None and plan.normalizer not in self.normalizers:
            return f"normalizer {plan.normalizer!r} not supported"
        lengths = not vis.uniform or vis.padded
        checks = (
            (vis.mask is not None and not self.bool_mask, "boolean masks"),
            (vis.bias is not None and not self.float_bias, "float (additive) masks"),
            (vis.banded and not self.band, "causal/window"),
            (lengths and not self.lengths, "key lengths"),
            (vis.block_mask is not None and not self.mask_mod, "mask_mod"),
            (score.mod is not None and not self.score_mod, "score_mod"),
            (plan.dropout_p > 0 and not self.dropout, "dropout"),
            (plan.return_weights and not self.weights, "returning weights"),
            (plan.summary is not None and not self.summaries, "summaries of the weights"),
            (plan.needs_grad and not self.grad, "gradients"),
            (plan.shapes.group > 1 and not self.grouped_heads, "grouped-query heads"),
        )
        for unsupported, what in checks:
            if unsupported:
                return f"{what} not supported"
        if self.dtypes is not None and plan.dtype not in self.dtypes:
            return f"dtype {plan.dtype} not supported"
        if self.device_types is not None and plan.device.type not in self.device_types:
            return f"device {plan.device.type!r} not supported"
        if not self.exports and torch.compiler.is_exporting():
            return (
                "does not export: under torch.export only kernels that trace to standard ATen "
                "ops for every size serve (sdpa, reference)"
            )
        if self.extra is not None:
            return self.extra(plan)
        return None


FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
SOFTMAX = frozenset({"softmax"})


@dataclass(frozen=True)
class Kernel:
    """A registered attention backend."""

    name: str
    fn: KernelFn
    capabilities: Capabilities
    priority: int  # lower runs first under backend="auto"
    description: str = ""
    # Under backend="auto" only: why another kernel should serve this plan although this one
    # could (e.g. it would be slower or use far more memory), or None. Named backends ignore it.
    declines: Callable[[AttentionPlan], str | None] | None = None
    # ``fn`` bound to one plan that asks for no weights, with the plan's decisions taken once:
    # ``call(q, k, v) -> out``, what a remembered plan (see remember()) runs on every later
    # call. None: ``fn(q, k, v, plan)`` each time.
    bind: Callable[[AttentionPlan], Answer] | None = None

    def answer(self, plan: AttentionPlan) -> Answer:
        """``fn`` bound to ``plan``, returning what :func:`attnkit.attention` returns:
        ``out``, or ``(out, weights)`` (the weights or their summary) when ``plan`` asks."""
        fn = self.fn
        if plan.return_weights or plan.summary is not None:

            def with_weights(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Any]:
                out, _lse, weights = fn(q, k, v, plan)
                return out, weights

            return with_weights
        if self.bind is not None:
            return self.bind(plan)
        return lambda q, k, v: fn(q, k, v, plan)[0]


@dataclass
class Dispatch:
    """Which kernel serves a request, and why every other one was passed over."""

    kernel: str | None
    passed_over: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"kernel: {self.kernel}"]
        lines += [f"  passed over {name}: {why}" for name, why in self.passed_over.items()]
        return "\n".join(lines)


_KERNELS: dict[str, Kernel] = {}
_ORDERED: dict[str, Kernel] = {}  # _KERNELS in auto order, sorted once per registration
# Plans already validated and dispatched, by the signature of the call that made them (see
# remember()); a registration may change any choice, so it forgets them all.
_CHOSEN: dict[Hashable, Answer] = {}
CHOSEN_LIMIT = 1024  # signatures remembered before the memory starts over


def register(kernel: Kernel) -> Kernel:
    """Add ``kernel`` to the registry (replacing one of the same name)."""
    _KERNELS[kernel.name] = kernel
    _ORDERED.clear()
    forget()
    return kernel


def forget() -> None:
    """Forget every plan :func:`remember` kept (the next call of each signature is validated
    and dispatched in full)."""
    _CHOSEN.clear()


def kernels() -> dict[str, Kernel]:
    """The registered kernels, in ``auto`` order."""
    if not _ORDERED:
        _ORDERED.update(sorted(_KERNELS.items(), key=lambda item: item[1].priority))
    return dict(_ORDERED)


def remember(signature: Hashable, kernel: str, plan: AttentionPlan) -> Answer:
    """Keep the kernel chosen for ``plan``, bound to it (:meth:`Kernel.answer`), under
    ``signature`` for :func:`remembered`, and return it.

    ``signature`` must hold everything the plan and the choice depend on; the caller
    (:func:`attnkit.attention`) makes one only for plans that hold no tensor, whose arguments
    are exactly typed (so equal signatures mean equal requests), and only once the request
    has passed validation and dispatch."""
    if len(_CHOSEN) >= CHOSEN_LIMIT:
        _CHOSEN.clear()
    answer = _CHOSEN[signature] = _KERNELS[kernel].answer(plan)
    return answer


# remembered(signature) -> the kernel bound to its plan that remember() kept under signature,
# or None (the memory's own lookup: no Python frame on the hot path).
remembered: Callable[[Hashable], Answer | None] = _CHOSEN.get


def select(plan: AttentionPlan, backend: str) -> Dispatch:
    """Pick the kernel for ``plan``: the named one, or under ``"auto"`` the first that can.

    Returns a :class:`Dispatch` whose ``kernel`` is ``None`` when nothing can serve the plan.
    """
    ordered = kernels()
    candidates = ordered if backend == "auto" else {backend: ordered[backend]}
    dispatch = Dispatch(kernel=None)
    # Declining weighs this call's sizes; an exported graph serves every size, so none declines.
    weigh = backend == "auto" and not torch.compiler.is_exporting()
    for name, kernel in candidates.items():
        reason = kernel.capabilities.refuses(plan)
        if reason is None and weigh and kernel.declines is not None:
            why = kernel.declines(plan)
            reason = None if why is None else f"able, but declined under auto: {why}"
        if reason is None and dispatch.kernel is None:
            dispatch.kernel = name
        elif reason is None:
            dispatch.passed_over[name] = f"lower priority than {dispatch.kernel!r}"
        else:
            dispatch.passed_over[name] = reason
    return dispatch
