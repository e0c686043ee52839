"""The shared grid and checks for every kernel against ``reference`` (DESIGN.md's grid).

A case runs :func:`attnkit.attention` twice, with the kernel under test and with ``reference``,
on the same float64 inputs, pulls fixed random cotangents through the output (and the weights,
when returned) and compares outputs, weights and the gradients of q, k, v, the float mask and
every score parameter. Low precision follows flash-attn's rule: the kernel's error against the
float64 reference must stay within twice the error that PyTorch's own arithmetic in that
precision makes (the naive ``softmax(q kᵀ) v`` computed in bf16, written here).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import attnkit
from attnkit import KeyLengths, Normalizer, Score

# name: (B, Hq, Hkv, Lq, Lk, D)
SHAPES: dict[str, tuple[int, int, int, int, int, int]] = {
    "len1": (1, 2, 2, 1, 1, 8),
    "gqa-7x97-d59": (2, 4, 2, 7, 97, 59),
    "mqa-97x7-d64": (1, 2, 1, 97, 7, 64),
    "square-97-d8": (2, 2, 2, 97, 97, 8),
    "long-1025-d8": (1, 2, 1, 1025, 1025, 8),
}
OPTIONS = (
    "plain", "causal", "window", "causal-window", "key-lengths", "key-starts", "bool-mask", "bias"
)


def grid(options: tuple[str, ...], long_options: tuple[str, ...]) -> list[Any]:
    """``pytest.param(shape, option)`` pairs: every option on the small shapes, a few on 1025."""
    pairs = [
        pytest.param(shape, option, id=f"{shape}-{option}")
        for shape in SHAPES
        if shape != "long-1025-d8"
        for option in options
    ]
    pairs += [
        pytest.param("long-1025-d8", option, id=f"long-1025-d8-{option}")
        for option in long_options
    ]
    return pairs


def make_inputs(
    shape: str | tuple[int, ...], dtype: torch.dtype = torch.float64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, hq, hkv, lq, lk, d = SHAPES[shape] if isinstance(shape, str) else shape
    gen = torch.Generator().manual_seed(seed)

    def make(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()

    return make(b, hq, lq, d), make(b, hkv, lk, d), make(b, hkv, lk, d)


def option_kwargs(
    option: str, q: torch.Tensor, k: torch.Tensor, bias_grad: bool = True
) -> dict[str, Any]:
    """Keyword arguments of :func:`attnkit.attention` for one grid option."""
    b, hq, lq, _ = q.shape
    lk = k.shape[2]
    gen = torch.Generator().manual_seed(1)
    if option == "plain":
        return {}
    if option == "causal":
        return {"causal": True}
    if option == "window":
        return {"window": (5, 3)}
    if option == "causal-window":
        return {"causal": True, "window": (16, 0)}
    if option == "key-lengths":
        lengths = [0, lk // 2 + 1][:b] if b > 1 else [lk // 2 + 1]
        return {"mask": KeyLengths(torch.tensor(lengths))}
    if option == "key-starts":  # left padding (and right padding in another item)
        starts, lengths = [lk // 3, 0][:b], [lk, lk // 2 + 1][:b]
        return {"mask": KeyLengths(torch.tensor(lengths), starts=torch.tensor(starts))}
    if option == "bool-mask":
        mask = torch.rand(b, hq, lq, lk, generator=gen) < 0.7
        mask[0, 0, 0] = False  # a query with nothing to attend to
        return {"mask": mask}
    if option == "bias":
        bias = torch.randn(1, hq, lq, lk, generator=gen, dtype=torch.float64)
        bias[..., 0, 0] = float("-inf")
        return {"mask": bias.to(q.dtype).requires_grad_(bias_grad)}
    raise ValueError(option)


def _cotangent(t: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)


def run(
    backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor | None]]:
    """Output, weights (or None) and the gradients of every input that requires one
    (q, k, v, the float mask, the score's parameters), in that order."""
    result = attnkit.attention(q, k, v, backend=backend, **kwargs)
    out, weights = result if isinstance(result, tuple) else (result, None)
    loss = (out * _cotangent(out, 11)).sum()
    if weights is not None:
        loss = loss + (weights * _cotangent(weights, 12)).sum()
    inputs = [q, k, v]
    mask = kwargs.get("mask")
    if isinstance(mask, torch.Tensor) and mask.is_floating_point():
        inputs.append(mask)
    score = kwargs.get("score")
    if isinstance(score, Score):
        inputs += list(score.params.values())
    normalize = kwargs.get("normalize")
    if isinstance(normalize, Normalizer):  # its tensors (the sinks), in order
        inputs += [p for p in normalize.params.values() if isinstance(p, torch.Tensor)]
    wanted = [t for t in inputs if t.requires_grad]
    grads = torch.autograd.grad(loss, wanted, allow_unused=True) if loss.requires_grad else []
    return out, weights, list(grads)


def assert_matches_reference(
    backend: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    check_dispatch: bool = True,
    **kwargs: Any,
) -> None:
    """Float64: the kernel equals ``reference`` to rounding, forward and backward."""
    if check_dispatch:
        assert attnkit.explain_dispatch(q, k, v, backend=backend, **kwargs).kernel == backend
    out, weights, grads = run(backend, q, k, v, **kwargs)
    ref_out, ref_weights, ref_grads = run("reference", q, k, v, **kwargs)
    tight = {"rtol": 1e-9, "atol": 1e-10}
    assert torch.isfinite(out).all(), "output has NaN/inf"
    torch.testing.assert_close(out, ref_out, **tight)
    if ref_weights is not None:
        assert weights is not None
        torch.testing.assert_close(weights, ref_weights, **tight)
    assert len(grads) == len(ref_grads)
    for i, (g, ref_g) in enumerate(zip(grads, ref_grads, strict=True)):
        if ref_g is None:
            assert g is None or torch.all(g == 0), f"gradient {i}"
            continue
        assert g is not None, f"gradient {i} missing"
        finite = torch.isfinite(ref_g)
        assert torch.equal(torch.isfinite(g), finite), f"gradient {i}: NaN/inf pattern"
        torch.testing.assert_close(g[finite], ref_g[finite], **tight, msg=f"gradient {i}")


# ---------------------------------------------------------------------------------------------
# Low precision (flash-attn's rule).


def _naive_lowp(q, k, v, *, causal=False, window=None, mask=None, return_weights=False):
    """softmax(q kᵀ/√d) v and the weights, computed in the inputs' own (low) precision."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = torch.matmul(q, k.transpose(-1, -2)) * (1 / math.sqrt(q.shape[-1]))
    lq, lk = q.shape[2], k.shape[2]
    allowed = torch.ones(lq, lk, dtype=torch.bool)
    if causal or window is not None:
        left, right = window if window is not None else (lk, lk)
        right = min(right, 0) if causal else right
        allowed = attnkit.masks.window(lq, lk, left, right)
    if mask is not None:
        allowed = allowed & mask
    s = s.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.matmul(p, v), p


def assert_lowp_within_rule(
    backend: str, shape: tuple[int, ...], dtype: torch.dtype = torch.bfloat16, **kwargs: Any
) -> None:
    """Forward and backward error of ``backend`` in ``dtype`` against float64 ``reference``
    ≤ 2 × the error of PyTorch's naive attention in ``dtype`` (plus a hair for exact ties)."""
    q, k, v = make_inputs(shape, dtype=dtype, seed=3)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out, weights, grads = run(backend, q, k, v, **kwargs)
    hi_out, hi_weights, hi_grads = run("reference", q64, k64, v64, **kwargs)
    naive, naive_weights = _naive_lowp(q, k, v, **kwargs)
    loss = (naive * _cotangent(naive, 11)).sum()
    if weights is not None:
        loss = loss + (naive_weights * _cotangent(naive_weights, 12)).sum()
    naive_grads = torch.autograd.grad(loss, (q, k, v))

    def err(a: torch.Tensor, b: torch.Tensor) -> float:
        return (a.double() - b.double()).abs().max().item()

    pairs = [("out", out, naive, hi_out)]
    if weights is not None:
        pairs.append(("weights", weights, naive_weights, hi_weights))
    pairs += [
        (name, g, ng, hg)
        for name, g, ng, hg in zip(("dq", "dk", "dv"), grads, naive_grads, hi_grads, strict=True)
    ]
    for name, ours, theirs, truth in pairs:
        assert ours.dtype == dtype
        bound = 2 * err(theirs, truth) + 1e-6
        assert err(ours, truth) <= bound, f"{name}: {err(ours, truth):.3g} > {bound:.3g}"
