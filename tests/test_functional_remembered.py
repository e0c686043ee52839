"""attention() remembers the plan and kernel of a call without masks by its signature: the
remembered path gives the reference kernel's answers and gradients, raises the same errors as
a first call, and follows the registry."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import attnkit
from attnkit import functional
from attnkit.kernels import kernels, register, registry


@pytest.fixture(autouse=True)
def _forget() -> Any:
    registry.forget()
    yield
    registry.forget()


def _qkv(lq: int, lk: int, hq: int = 4, hk: int = 4, d: int = 16, dtype=torch.float32,
         grad: bool = False) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(lq * 1000 + lk)
    shapes = ((1, hq, lq, d), (1, hk, lk, d), (1, hk, lk, d))
    return tuple(torch.randn(*s, generator=gen, dtype=dtype).requires_grad_(grad) for s in shapes)


def _no_second_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the remembered call built a plan again")

    monkeypatch.setattr(functional, "build_plan", refuse)


CALLS = [
    pytest.param((1, 1), {}, id="L1"),
    pytest.param((16, 16), {}, id="L16"),
    pytest.param((1, 512), {"causal": True}, id="decode-causal-512"),
    pytest.param((5, 9), {"causal": True}, id="causal-bottom-right-band"),
    pytest.param((7, 7), {"causal": True}, id="causal-square"),
    pytest.param((6, 6), {"causal": "top_left"}, id="causal-top-left"),
    pytest.param((3, 8), {"score": "dot", "scale": 0.3}, id="dot-scale"),
    pytest.param((3, 8), {"score": "cosine"}, id="cosine"),
    pytest.param((4, 6), {"return_weights": True}, id="weights"),
    pytest.param((4, 6), {"normalize": "sparsemax"}, id="sparsemax"),
    pytest.param((4, 6), {"backend": "chunked"}, id="named-backend"),
]


@pytest.mark.parametrize(("lengths", "kwargs"), CALLS)
def test_a_remembered_call_gives_the_reference_answers(
    lengths: tuple[int, int], kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    q, k, v = _qkv(*lengths)
    first = attnkit.attention(q, k, v, **kwargs)
    expected = attnkit.attention(q, k, v, **{**kwargs, "backend": "reference"})
    _no_second_plan(monkeypatch)
    again = attnkit.attention(q, k, v, **kwargs)
    for got in (first, again):
        for g, e in zip(*(x if isinstance(x, tuple) else (x,) for x in (got, expected)),
                        strict=True):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"causal": True}])
def test_a_remembered_call_has_the_reference_gradients(
    kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    q, k, v = _qkv(3, 11, hq=4, hk=2, dtype=torch.float64, grad=True)  # grouped heads
    cotangent = torch.randn(1, 4, 3, 16, dtype=torch.float64)

    def grads(backend: str) -> list[torch.Tensor]:
        attnkit.attention(q, k, v, backend=backend, **kwargs).backward(cotangent)
        out = [t.grad.clone() for t in (q, k, v)]
        for t in (q, k, v):
            t.grad = None
        return out

    expected = grads("reference")
    grads("auto")  # remembers
    _no_second_plan(monkeypatch)
    for got, want in zip(grads("auto"), expected, strict=True):
        torch.testing.assert_close(got, want)


def _error(call: Any) -> tuple[type, str]:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return info.type, str(info.value)


BAD = [
    pytest.param({"causal": 1}, id="causal-int"),
    pytest.param({"causal": "sideways"}, id="causal-unknown"),
    pytest.param({"scale": True}, id="scale-bool"),
    pytest.param({"scale": float("inf")}, id="scale-inf"),
    pytest.param({"dropout_p": True}, id="dropout-bool"),
    pytest.param({"dropout_p": 1.0}, id="dropout-one"),
    pytest.param({"return_weights": 1}, id="weights-int"),
    pytest.param({"score": "nope"}, id="score"),
    pytest.param({"normalize": "nope"}, id="normalize"),
    pytest.param({"backend": "nope"}, id="backend"),
    pytest.param({"backend": "local"}, id="backend-cannot-serve"),
    pytest.param({"k": torch.randn(1, 4, 8, 16, dtype=torch.float64)}, id="k-dtype"),
    pytest.param({"v": torch.randn(1, 4, 8, 16, device="meta")}, id="v-device"),
    pytest.param({"k": torch.randn(1, 3, 8, 16), "v": torch.randn(1, 3, 8, 16)}, id="heads"),
    pytest.param({"k": torch.randn(1, 4, 8, 15)}, id="head-dim"),
    pytest.param({"q": torch.randn(4, 2, 16)}, id="q-rank"),
    pytest.param({"q": torch.zeros(1, 4, 2, 16, dtype=torch.int64)}, id="q-int"),
]


@pytest.mark.parametrize("bad", BAD)
def test_bad_input_is_refused_with_the_same_error_once_a_good_call_is_remembered(
    bad: dict[str, Any],
) -> None:
    q, k, v = _qkv(2, 8)
    tensors = {"q": q, "k": k, "v": v}
    args = {name: bad.get(name, t) for name, t in tensors.items()}
    options = {name: value for name, value in bad.items() if name not in tensors}

    def call() -> object:
        return attnkit.attention(args["q"], args["k"], args["v"], **options)

    cold = _error(call)
    for valid in ({}, {"causal": True}, {"return_weights": True}, {"scale": 1.0}):
        attnkit.attention(q, k, v, **valid)  # remembered: the same sizes, valid arguments
    assert _error(call) == cold


def test_a_nested_tensor_is_refused_by_name_after_a_remembered_call() -> None:
    q, k, v = _qkv(2, 2, hq=1, hk=1, d=3)
    attnkit.attention(q, k, v)
    nested = torch.nested.nested_tensor([torch.randn(1, 2, 3), torch.randn(1, 2, 3)])
    with pytest.raises(TypeError, match="q is a nested"):
        attnkit.attention(nested, k, v)


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_a_sparse_tensor_is_refused_by_name_before_and_after_a_remembered_call(which) -> None:
    """A sparse tensor has a dense tensor's type, sizes and dtype, so it shares the signature
    of a remembered call; the kernel's failure sends it through the full validation."""
    q, k, v = _qkv(2, 2, hq=1, hk=1, d=3)
    args = {"q": q, "k": k, "v": v}
    sparse = {**args, which: args[which].detach().to_sparse()}
    message = rf"{which} must be a dense \(strided\) tensor, got layout torch.sparse_coo"
    with pytest.raises(TypeError, match=message):
        attnkit.attention(**sparse)
    attnkit.attention(q, k, v)
    with pytest.raises(TypeError, match=message):
        attnkit.attention(**sparse)


def test_registering_a_kernel_forgets_the_remembered_choices() -> None:
    q, k, v = _qkv(2, 8)
    original = kernels()["sdpa"]
    attnkit.attention(q, k, v)  # remembered: sdpa
    runs = []

    def counting(*args: Any) -> Any:
        runs.append(1)
        return original.fn(*args)

    register(registry.Kernel("sdpa", counting, original.capabilities, original.priority,
                             original.description, declines=original.declines))
    try:
        expected = attnkit.attention(q, k, v, backend="reference")
        for _ in range(2):
            torch.testing.assert_close(attnkit.attention(q, k, v), expected)
        assert len(runs) == 2  # the new kernel ran, remembered or not
        assert attnkit.explain_dispatch(q, k, v).kernel == "sdpa"
    finally:
        register(original)


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "CHOSEN_LIMIT", 3)
    for lk in range(1, 8):  # one signature per length, as a growing KV cache makes
        attnkit.attention(*_qkv(1, lk))
        assert len(registry._CHOSEN) <= 3


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
def test_export_after_remembered_calls_traces_the_kernel(strict: bool) -> None:
    q, k, v = _qkv(1, 1)
    attnkit.attention(q, k, v, causal=True)

    class Attend(torch.nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return attnkit.attention(q, k, v, causal=True)

    program = torch.export.export(Attend(), (q, k, v), strict=strict)
    ops = {str(node.target) for node in program.graph.nodes}
    assert any("scaled_dot_product" in op for op in ops), ops
    torch.testing.assert_close(program.module()(q, k, v), Attend()(q, k, v))
