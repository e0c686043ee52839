"""Attention sinks (``softmax_with_sinks``, gpt-oss) in the block kernels under
``torch.compile(fullgraph=True)``: ``chunked`` (gpt-oss's full layers) and ``local`` (its
sliding-window layers) carry the sinks through their custom operator, forward and backward.
Each kernel is forced (``backend=...`` raises when a kernel refuses the request), and the
output and the gradients of q, k, v and the sinks equal the eager ``reference`` kernel (the
definition: the sink's logit in each row's softmax denominator).

Sizes are small and awkward: grouped heads (4 query heads over 2), queries that are not a
multiple of local's block (its padded layout), key lengths, sinks of either sign.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import attnkit
from attnkit.functional import KeyLengths
from tests.compile.test_models import check_compiled_training

B, HQ, HKV, D = 2, 4, 2, 8

# name -> (Lq, Lk, attention() arguments besides the normalizer)
CASES = {
    "chunked-causal": (13, 21, dict(backend="chunked", causal=True,
                                    mask=KeyLengths(torch.tensor([21, 15]),
                                                    starts=torch.tensor([4, 0])))),
    # causal with Lq > Lk (top left): the first queries see no key, all their weight on the sink
    "chunked-empty-rows": (9, 5, dict(backend="chunked", causal="top_left")),
    "chunked-weights": (13, 21, dict(backend="chunked", causal=True, return_weights=True)),
    # gpt-oss's sliding layers: window=(W − 1, 0), causal; small here (W = 8, 70 keys)
    "local-causal": (70, 70, dict(backend="local", causal=True, window=(7, 0))),
    "local-lengths": (70, 70, dict(backend="local", causal=True, window=(7, 0),
                                   mask=KeyLengths(torch.tensor([70, 41])))),
}


def _inputs(lq: int, lk: int, grad: bool = True) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(7)
    shapes = [(B, HQ, lq, D), (B, HKV, lk, D), (B, HKV, lk, D), (HQ,)]
    q, k, v, sinks = (torch.randn(s, generator=gen) for s in shapes)
    sinks = sinks * 2  # either sign, some larger than the rows' lse
    return tuple(t.requires_grad_(grad) for t in (q, k, v, sinks))


def _loss(kwargs: dict, lk: int):
    """``attention()`` with sinks under ``kwargs``, reduced to a scalar that reads the output
    and, when returned, the weights (so their gradient reaches the sinks too)."""

    def loss(q: Tensor, k: Tensor, v: Tensor, sinks: Tensor) -> Tensor:
        norm = attnkit.Normalizer("softmax_with_sinks", sinks=sinks)
        result = attnkit.attention(q, k, v, normalize=norm, **kwargs)
        if isinstance(result, tuple):
            out, weights = result
            return out.square().sum() + (weights * torch.arange(lk)).sum()
        return result.square().sum()

    return loss


@pytest.mark.parametrize("case", list(CASES))
def test_sinks_compile_whole_forward_and_backward(case: str) -> None:
    lq, lk, kwargs = CASES[case]
    leaves = _inputs(lq, lk)
    compiled = torch.compile(_loss(kwargs, lk), fullgraph=True, backend="aot_eager")
    got = compiled(*leaves)
    got_grads = torch.autograd.grad(got, leaves)
    want = _loss({**kwargs, "backend": "reference"}, lk)(*leaves)
    want_grads = torch.autograd.grad(want, leaves)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for name, g, w in zip(("q", "k", "v", "sinks"), got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4, msg=f"gradient of {name}")


@pytest.mark.parametrize("case", ["chunked-causal", "local-causal"])
def test_frozen_sinks_compile(case: str) -> None:
    """Sinks that need no gradient (a frozen model, adapters trained): the others' gradients
    are unchanged and the graph asks the operator for no sinks' gradient."""
    lq, lk, kwargs = CASES[case]
    q, k, v, sinks = _inputs(lq, lk)
    sinks = sinks.detach()
    compiled = torch.compile(_loss(kwargs, lk), fullgraph=True, backend="aot_eager")
    got_grads = torch.autograd.grad(compiled(q, k, v, sinks), (q, k, v))
    want = _loss({**kwargs, "backend": "reference"}, lk)(q, k, v, sinks)
    for g, w in zip(got_grads, torch.autograd.grad(want, (q, k, v)), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", ["chunked-causal", "local-causal"])
def test_inductor_compiles_the_forward_with_sinks(case: str) -> None:
    lq, lk, kwargs = CASES[case]
    args = _inputs(lq, lk, grad=False)
    compiled = torch.compile(_loss(kwargs, lk), fullgraph=True, backend="inductor")
    want = _loss({**kwargs, "backend": "reference"}, lk)(*args)
    torch.testing.assert_close(compiled(*args), want, rtol=1e-4, atol=1e-3)


class _GptOssLike(nn.Module):
    """Two layers as gpt-oss alternates them: a sliding-window layer (``local``) and a full
    causal one (``chunked``), each with its own learnt sinks ``(Hq,)``, grouped heads."""

    def __init__(self, width: int = 32, window: int = 8) -> None:
        super().__init__()
        torch.manual_seed(12)
        self.window = window
        self.qkv = nn.ModuleList(nn.Linear(width, (HQ + 2 * HKV) * D) for _ in range(2))
        self.outs = nn.ModuleList(nn.Linear(HQ * D, width) for _ in range(2))
        self.sinks = nn.ParameterList(nn.Parameter(torch.randn(HQ)) for _ in range(2))

    def forward(self, x: Tensor) -> Tensor:  # x (B, L, width)
        b, length, _ = x.shape
        for layer, (qkv, proj, sinks) in enumerate(zip(self.qkv, self.outs, self.sinks,
                                                       strict=True)):
            heads = qkv(x).view(b, length, HQ + 2 * HKV, D).transpose(1, 2)  # (B, H, L, D)
            q, k, v = heads.split([HQ, HKV, HKV], dim=1)
            band = dict(backend="local", window=(self.window - 1, 0)) if layer == 0 else \
                dict(backend="chunked")
            out = attnkit.attention(q, k, v, causal=True, **band,
                                    normalize=attnkit.Normalizer("softmax_with_sinks",
                                                                 sinks=sinks))
            x = x + proj(out.transpose(1, 2).reshape(b, length, HQ * D))  # (B, L, width)
        return x


def test_a_gpt_oss_like_model_compiles_forward_and_training_step() -> None:
    """Forward, every parameter's gradient (the sinks' included) equal the uncompiled model
    (the eager kernels), and compiled updates lower the loss."""
    x = torch.randn(B, 70, 32, generator=torch.Generator().manual_seed(13))
    check_compiled_training(_GptOssLike(), (x,), lambda y: y.square().mean())
