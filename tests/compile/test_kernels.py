"""Every registered kernel under ``torch.compile(fullgraph=True)``, forward and backward: no
graph break (``fullgraph`` raises on one), and outputs and gradients equal to the eager
``reference`` kernel (the oracle). ``sdpa`` and ``reference`` are traced; ``chunked``,
``local``, ``additive`` and the weights path run as the custom operator
``attnkit::block_attention``, checked with ``torch.library.opcheck`` (with attention sinks too;
their compiled tests are in ``test_sinks.py``).

Sizes are tiny and awkward: grouped heads (4 query heads over 2), ``Lq != Lk`` (bottom-right
causal), key lengths. ``aot_eager`` checks the graphs; one ``inductor`` test per kernel checks
that inductor compiles its forward pass.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing
from torch import Tensor

import attnkit
from attnkit.functional import KeyLengths, build_plan
from attnkit.kernels import ops

B, HQ, HKV, LQ, LK, D, A = 2, 4, 2, 13, 21, 8, 6


def _inputs(grad: bool = True) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(3)
    shapes = [(B, HQ, LQ, D), (B, HKV, LK, D), (B, HKV, LK, D)]
    return tuple(torch.randn(s, generator=gen).requires_grad_(grad) for s in shapes)


def _additive() -> attnkit.Score:
    gen = torch.Generator().manual_seed(4)
    w_q, w_k = torch.randn(A, D, generator=gen), torch.randn(A, D, generator=gen)
    return attnkit.Score("additive", w_q=w_q, w_k=w_k, v=torch.randn(A, generator=gen))


LENGTHS = KeyLengths(torch.tensor([LK, 15]), starts=torch.tensor([4, 0]))  # left and right
BIAS = torch.randn(B, 1, LQ, LK, generator=torch.Generator().manual_seed(5))

# kernel -> attention() arguments it is forced to serve (each with a mask of some kind)
CASES = {
    "sdpa": dict(backend="sdpa", causal=True, mask=LENGTHS),
    "reference": dict(backend="reference", causal=True, mask=torch.rand(LQ, LK) > 0.3),
    "chunked": dict(backend="chunked", causal=True, mask=BIAS),
    "local": dict(backend="local", window=(3, 2), mask=LENGTHS),
    "additive": dict(backend="additive", score=_additive(), causal=True, mask=LENGTHS),
    "weights": dict(backend="chunked", causal=True, mask=LENGTHS, return_weights=True),
}


def _loss(kwargs: dict, bias: Tensor | None = None):
    """``attention()`` under ``kwargs`` reduced to a scalar that reads the output and, when
    returned, the weights (so their gradient is tested too)."""

    def loss(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = bias) -> Tensor:
        args = dict(kwargs)
        if bias is not None:
            args["mask"] = bias
        result = attnkit.attention(q, k, v, **args)
        if isinstance(result, tuple):
            out, weights = result
            return out.square().sum() + (weights * torch.arange(LK)).sum()
        return result.square().sum()

    return loss


def _oracle(kwargs: dict) -> dict:
    return {**kwargs, "backend": "reference"}


@pytest.mark.parametrize("kernel", list(CASES))
def test_forward_and_backward_compile_whole(kernel: str) -> None:
    kwargs = CASES[kernel]
    q, k, v = _inputs()
    bias = BIAS.clone().requires_grad_() if kernel == "chunked" else None
    leaves = (q, k, v) if bias is None else (q, k, v, bias)
    compiled = torch.compile(_loss(kwargs, bias), fullgraph=True, backend="aot_eager")
    got = compiled(q, k, v)
    got_grads = torch.autograd.grad(got, leaves)
    want = _loss(_oracle(kwargs), bias)(q, k, v)
    want_grads = torch.autograd.grad(want, leaves)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for name, g, w in zip(("q", "k", "v", "bias"), got_grads, want_grads, strict=False):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4, msg=f"gradient of {name}")


@pytest.mark.parametrize("kernel", list(CASES))
def test_inductor_compiles_the_forward(kernel: str) -> None:
    kwargs = CASES[kernel]
    q, k, v = _inputs(grad=False)
    compiled = torch.compile(_loss(kwargs), fullgraph=True, backend="inductor")
    torch.testing.assert_close(compiled(q, k, v), _loss(_oracle(kwargs))(q, k, v), rtol=1e-4,
                               atol=1e-3)


def test_a_block_kernel_compiles_once_for_every_length() -> None:
    """The custom operator's fake implementation gives the shapes for any length: one
    graph serves them all (with dynamic shapes), each equal to the oracle."""
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    kwargs = {"backend": "chunked", "causal": True}
    compiled = torch.compile(_loss(kwargs), fullgraph=True, backend=counter, dynamic=True)
    compiled_frames = []
    for lq, lk in ((5, 9), (11, 30), (17, 17), (9, 4)):  # the last: negative offset
        q = torch.randn(B, HQ, lq, D)
        k, v = torch.randn(B, HKV, lk, D), torch.randn(B, HKV, lk, D)
        torch.testing.assert_close(compiled(q, k, v), _loss(_oracle(kwargs))(q, k, v),
                                   rtol=1e-4, atol=1e-4)
        compiled_frames.append(counter.frame_count)
    assert compiled_frames[1:] == compiled_frames[:1] * 3  # nothing recompiled


def test_compiled_dropout_regenerates_the_forward_mask_in_backward() -> None:
    """With ``v`` the identity the output is the dropped weights ``P̃`` themselves, and the
    gradient of ``v`` must be ``P̃ᵀ g``: the backward pass dropped exactly what the forward
    did. Two calls draw different masks (the seed is drawn by the graph)."""
    q = torch.randn(1, 2, 24, D)
    k = torch.randn(1, 2, 24, D)
    v = torch.eye(24).expand(1, 2, 24, 24).clone().requires_grad_()
    g = torch.randn(1, 2, 24, 24)

    def f(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return attnkit.attention(q, k, v, backend="chunked", dropout_p=0.5)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(q, k, v)
    (grad_v,) = torch.autograd.grad((out * g).sum(), v)
    dropped = out.detach()
    assert 0.3 < float((dropped == 0).float().mean()) < 0.7
    torch.testing.assert_close(grad_v, dropped.transpose(-1, -2) @ g)
    assert not torch.equal(compiled(q, k, v), out)


@pytest.mark.parametrize("kernel", ["chunked", "additive"])
def test_callables_cannot_cross_the_operator_and_the_block_kernels_say_so(
    kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the dispatch says while torch.compile traces: a ``score_mod`` goes to the
    traceable kernels."""
    q, k, v = _inputs(grad=False)
    kwargs = {key: val for key, val in CASES[kernel].items() if key != "backend"}
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    dispatch = attnkit.explain_dispatch(q, k, v, score_mod=lambda s, b, h, i, j: s, **kwargs)
    assert "score_mod runs in the traceable kernels" in dispatch.passed_over[kernel]
    assert dispatch.kernel == "reference"


def _document(b: Tensor, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
    return (i // 5 == j // 7) | (j < 3)  # blocks of a packed batch, plus 3 global keys


def test_mask_mod_and_score_mod_given_to_attention_compile_whole() -> None:
    """``mask_mod``/``score_mod`` passed to ``attention()`` itself: traced, the blocks stay
    unclassified (classifying them reads the mask's values) and ``score_mod`` runs inside the
    graph, so the table it reads gets its gradient as in eager."""
    q, k, v = _inputs()
    table = torch.randn(LQ + LK, generator=torch.Generator().manual_seed(6)).requires_grad_()

    def relative(s: Tensor, b: Tensor, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        return s + table[i - j + LK]

    def loss(q: Tensor, k: Tensor, v: Tensor, backend: str = "auto") -> Tensor:
        out = attnkit.attention(q, k, v, mask_mod=_document, score_mod=relative, backend=backend)
        return out.square().sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got = compiled(q, k, v)
    want = loss(q, k, v, backend="reference")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    got_grads = torch.autograd.grad(got, (q, k, v, table))
    want_grads = torch.autograd.grad(want, (q, k, v, table))
    for name, g, w in zip(("q", "k", "v", "table"), got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4, msg=f"gradient of {name}")
    inductor = torch.compile(loss, fullgraph=True, backend="inductor")
    with torch.no_grad():
        torch.testing.assert_close(inductor(q, k, v), want, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# opcheck: the operator's schema, fake implementation, autograd registration, and the traced
# (AOT) forward and backward against the real one.


def _op_args(kernel: str) -> tuple:
    """The operator's arguments for ``kernel``, or ``kernel-sinks``: the same with attention
    sinks, passed as the plan holds them (a ``(B, Hq, Lq)`` broadcast view of ``(Hq,)``)."""
    q, k, v = _inputs()
    kernel, sinks = kernel.removesuffix("-sinks"), kernel.endswith("-sinks")
    kwargs = {key: val for key, val in CASES[kernel].items() if key != "backend"}
    if kernel == "chunked":
        kwargs["mask"] = BIAS.clone().requires_grad_()
    if sinks:
        logits = torch.randn(HQ, generator=torch.Generator().manual_seed(8)).requires_grad_()
        kwargs["normalize"] = attnkit.Normalizer("softmax_with_sinks", sinks=logits)
    plan = build_plan(q, k, v, **kwargs)
    inputs, scale = [q, k, v], plan.score.scale
    if kernel == "additive":
        form = plan.score.additive
        inputs = [q @ form.w_q.T, k @ form.w_k.T, form.v, v]
    need_lse = kernel == "additive" or (kernel == "chunked" and not plan.return_weights) or sinks
    if kernel == "weights":
        kernel = "chunked"
    return ops.arguments(kernel, [t.detach().requires_grad_() for t in inputs], plan, scale,
                         need_lse)


@pytest.mark.parametrize("kernel", ["chunked", "local", "additive", "weights", "chunked-sinks",
                                    "local-sinks", "weights-sinks"])
def test_opcheck_block_attention(kernel: str) -> None:
    torch.library.opcheck(torch.ops.attnkit.block_attention.default, _op_args(kernel))


@pytest.mark.parametrize("kernel", ["chunked", "additive", "chunked-sinks", "local-sinks"])
def test_opcheck_block_attention_backward(kernel: str) -> None:
    args = _op_args(kernel)
    with torch.no_grad():
        outputs = torch.ops.attnkit.block_attention(*args)
    inputs = [t.detach() for t in args[1]]
    grads = [torch.randn_like(outputs[0]), None, None]
    named = dict(zip(ops._ARGS, args, strict=True))
    bias = named["bias"]
    visibility = [named[name] for name in ops._VIS]
    visibility[ops._BIAS] = None if bias is None else bias.detach()
    sinks = None if named["sinks"] is None else named["sinks"].detach()
    settings = [named[name] for name in ops._ARGS[ops._SETTINGS:]]
    backward_args = (args[0], grads, inputs, outputs, visibility, sinks, *settings,
                     bias is not None, sinks is not None)
    torch.library.opcheck(torch.ops.attnkit.block_attention_backward.default, backward_args)


def test_a_weight_summary_compiles() -> None:
    """``return_weights="heads_mean"`` under compile (the reference kernel makes it: the
    operator returns full weights only) equals the mean over heads of the eager weights."""
    q, k, v = _inputs(grad=False)

    def f(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return attnkit.attention(q, k, v, causal=True, return_weights="heads_mean")[1]

    got = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v)
    weights = attnkit.attention(q, k, v, causal=True, return_weights=True, backend="reference")[1]
    torch.testing.assert_close(got, weights.mean(dim=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["sdpa", "chunked", "reference"])
def test_per_sequence_alignment_compiles(backend: str) -> None:
    """KeyLengths with query lengths and starts (align="end": each sequence bottom-right of
    its own keys) compile with fullgraph: their value checks step aside while tracing, and
    the output equals eager's."""
    q, k, v = _inputs(grad=False)
    padding = KeyLengths(torch.tensor([LK, 15]), starts=torch.tensor([2, 0]),
                         query_lengths=torch.tensor([LQ, LQ - 3]))

    def f(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return attnkit.attention(q, k, v, mask=padding, causal=True, backend=backend)

    got = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v)
    torch.testing.assert_close(got, f(q, k, v))
