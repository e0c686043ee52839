"""Where queries sit among the keys: ``causal="top_left"`` against PyTorch's own top-left
causal attention, per-sequence alignment of padded batches (``KeyLengths(align="end")``,
flash-attention's variable-length convention) against each sequence run alone, and the
gradient of a gradient (``reference`` only; the block kernels say so)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_upper_left

import attnkit
from attnkit import KeyLengths

BACKENDS = ["sdpa", "chunked", "local", "reference"]


def _qkv(b: int, hq: int, hkv: int, lq: int, lk: int, d: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)

    def make(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    return make(b, hq, lq, d), make(b, hkv, lk, d), make(b, hkv, lk, d)


@pytest.mark.parametrize(("lq", "lk"), [(7, 19), (19, 7), (13, 13)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_top_left_causal_equals_pytorchs(lq: int, lk: int, backend: str) -> None:
    q, k, v = _qkv(2, 2, 2, lq, lk)
    kwargs = {"causal": "top_left"}
    if backend == "local":
        kwargs["window"] = (10**6, 10**6)  # local needs a window; this one hides nothing
    ours = attnkit.attention(q, k, v, backend=backend, **kwargs)
    # PyTorch: rows that see no key are NaN in SDPA's is_causal; attnkit gives 0 (documented)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_upper_left(lq, lk))
    theirs = theirs.nan_to_num(0.0)
    torch.testing.assert_close(ours, theirs)
    ours_grads = torch.autograd.grad(ours.sum(), (q, k, v))
    theirs_grads = torch.autograd.grad(theirs.sum(), (q, k, v))
    for a, b in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(a, b.nan_to_num(0.0))


def test_sdpa_serves_top_left_causal_without_a_dense_mask() -> None:
    q, k, v = (t.detach() for t in _qkv(1, 2, 2, 300, 500))
    plan = attnkit.functional.build_plan(q, k, v, causal="top_left")
    assert plan.visibility.top_left_causal and attnkit.kernels.sdpa.dense_bytes(plan) == 0
    assert attnkit.explain_dispatch(q, k, v, causal="top_left").kernel == "sdpa"
    with pytest.raises(TypeError, match=r"causal must be a bool, 'bottom_right' or 'top_left'"):
        attnkit.attention(q, k, v, causal="upper_left")
    bottom = attnkit.attention(q, k, v, causal="bottom_right")
    torch.testing.assert_close(bottom, attnkit.attention(q, k, v, causal=True))


CASES = [
    pytest.param({"causal": True}, id="causal"),
    pytest.param({"causal": True, "window": (4, 0)}, id="causal-window"),
    pytest.param({"window": (3, 2)}, id="window"),
]


@pytest.mark.parametrize("kwargs", CASES)
@pytest.mark.parametrize("with_query_lengths", [False, True])
@pytest.mark.parametrize("backend", ["sdpa", "chunked", "reference", "auto"])
def test_each_sequence_aligns_on_its_own_like_running_it_alone(
    kwargs: dict, with_query_lengths: bool, backend: str
) -> None:
    """Padded batch with ``align="end"`` equals a loop over the sequences, each sliced to its
    real length and run alone (bottom-right); padded query rows give 0."""
    lq, lk = 9, 15
    q, k, v = _qkv(3, 4, 2, lq, lk, seed=1)
    key_lengths = torch.tensor([15, 6, 11])
    query_lengths = torch.tensor([9, 4, 7]) if with_query_lengths else None
    mask = KeyLengths(key_lengths, query_lengths=query_lengths, align="end")
    out = attnkit.attention(q, k, v, mask=mask, backend=backend, **kwargs)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=out.dtype)
    grads = torch.autograd.grad((out * cot).sum(), (q, k, v))
    for b in range(3):
        nq = lq if query_lengths is None else int(query_lengths[b])
        nk = int(key_lengths[b])
        qb, kb, vb = q[b : b + 1, :, :nq], k[b : b + 1, :, :nk], v[b : b + 1, :, :nk]
        alone = attnkit.attention(qb, kb, vb, backend="reference", **kwargs)
        want = torch.autograd.grad((alone * cot[b : b + 1, :, :nq]).sum(), (qb, kb, vb))
        torch.testing.assert_close(out[b : b + 1, :, :nq], alone)
        assert torch.all(out[b, :, nq:] == 0)
        for got, expected, n in zip(grads, want, (nq, nk, nk), strict=True):
            torch.testing.assert_close(got[b : b + 1, :, :n], expected)
            assert torch.all(got[b, :, n:] == 0)


def test_alignment_errors_are_named() -> None:
    q, k, v = (t.detach() for t in _qkv(2, 2, 2, 5, 7))
    with pytest.raises(ValueError, match="align must be 'padded' or 'end'"):
        KeyLengths(torch.tensor([7, 5]), align="start")
    with pytest.raises(ValueError, match="query_lengths align each sequence"):
        KeyLengths(torch.tensor([7, 5]), query_lengths=torch.tensor([5, 5]), align="padded")
    with pytest.raises(ValueError, match=r"query_lengths must lie in 0..Lq = 5"):
        attnkit.attention(q, k, v, mask=KeyLengths(torch.tensor([7, 5]),
                                                   query_lengths=torch.tensor([6, 5])))
    with pytest.raises(ValueError, match="causal='top_left' places query i"):
        attnkit.attention(q, k, v, causal="top_left",
                          mask=KeyLengths(torch.tensor([7, 5]), align="end"))


def test_gradient_of_a_gradient_on_reference() -> None:
    q, k, v = _qkv(1, 2, 1, 5, 6, d=4)

    def attend(q, k, v):
        return attnkit.attention(q, k, v, causal=True, backend="reference")

    assert torch.autograd.gradgradcheck(attend, (q, k, v))


@pytest.mark.parametrize(
    ("backend", "kwargs"),
    [
        ("chunked", {}),
        ("chunked", {"return_weights": True}),
        ("local", {"window": (2, 2)}),
        ("additive", {"score": "additive"}),
    ],
)
def test_block_kernels_refuse_a_gradient_of_a_gradient_by_name(backend: str, kwargs) -> None:
    q, k, v = _qkv(1, 2, 1, 5, 6, d=4)
    if kwargs.get("score") == "additive":
        from tests.kernels.test_additive import additive_score

        kwargs = {"score": additive_score(4, 4)}
    result = attnkit.attention(q, k, v, backend=backend, **kwargs)
    out = result[0] if isinstance(result, tuple) else result
    with pytest.raises(RuntimeError, match=rf"{backend} kernel: no double backward .* "
                                           r"use backend='reference'"):
        torch.autograd.grad(out.sum(), (q,), create_graph=True)
    (dq,) = torch.autograd.grad(out.sum(), (q,))  # a plain gradient still works
    assert torch.isfinite(dq).all()
