"""The block step of ring attention against the ``reference`` kernel.

Blocks sit at arbitrary global positions; the test writes the visibility rule out on its own
(a double loop), hands it to ``reference`` as a boolean mask, and compares the output, the
log-sum-exp and, through autograd of ``reference``, the gradients.
"""

from __future__ import annotations

import math

import pytest
import torch

import attnkit
from attnkit.distributed.block import (
    any_visible,
    block_backward,
    block_forward,
    merge,
)
from attnkit.functional import build_plan
from attnkit.kernels.reference import reference


def allowed(qp: list[int], kp: list[int], causal: bool, window) -> torch.Tensor:
    """(Lq, Lk) from the rule's words: j <= i when causal, i - l <= j <= i + r in a window."""
    out = torch.ones(len(qp), len(kp), dtype=torch.bool)
    for a, i in enumerate(qp):
        for b, j in enumerate(kp):
            if causal and j > i:
                out[a, b] = False
            if window is not None and not (i - window[0] <= j <= i + window[1]):
                out[a, b] = False
    return out


def inputs(b, hq, hkv, lq, lk, d, dv, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)

    def make(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()

    return make(b, hq, lq, d), make(b, hkv, lk, d), make(b, hkv, lk, dv)


def ref_out_lse(q, k, v, mask, scale):
    """Output and lse of ``reference`` with a boolean mask (lse from the kernel itself)."""
    plan = build_plan(q, k, v, mask=mask, scale=scale)
    out, lse, _ = reference(q, k, v, plan)
    return out, lse


# Query positions out of order and with gaps; keys ascending with gaps; some queries see
# nothing under causal (positions before every key).
Q_POS = [12, 3, 40, 41, 0, 25, 7]
K_POS = [2, 3, 5, 11, 12, 13, 20, 26, 30, 39, 44]
CASES = [
    pytest.param(False, None, id="plain"),
    pytest.param(True, None, id="causal"),
    pytest.param(False, (4, 2), id="window"),
    pytest.param(True, (6, 3), id="causal-window"),
]


@pytest.mark.parametrize(("causal", "window"), CASES)
@pytest.mark.parametrize("heads", [(2, 2), (4, 2), (3, 1)], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("chunk", [1, 3, 256])
def test_forward_and_backward_match_reference(causal, window, heads, chunk) -> None:
    hq, hkv = heads
    q, k, v = inputs(2, hq, hkv, len(Q_POS), len(K_POS), 5, 3)
    qp, kp = torch.tensor(Q_POS), torch.tensor(K_POS)
    mask = allowed(Q_POS, K_POS, causal, window)
    scale = 0.7
    want_out, want_lse = ref_out_lse(q, k, v, mask, scale)
    out, lse = block_forward(
        q.detach(), k.detach(), v.detach(), scale=scale, q_positions=qp, k_positions=kp,
        causal=causal, window=window, chunk=chunk,
    )
    torch.testing.assert_close(out, want_out.detach())
    torch.testing.assert_close(lse.float(), want_lse)
    assert not out.isnan().any() and not lse.isnan().any()
    empty = ~mask.any(dim=1)  # (Lq,)
    if empty.any():
        assert torch.isneginf(lse[..., empty]).all() and (out[..., empty, :] == 0).all()

    dout = torch.randn(out.shape, dtype=torch.float64)
    want = torch.autograd.grad(want_out, (q, k, v), dout)
    got = block_backward(
        q.detach(), k.detach(), v.detach(), out, lse, dout, scale=scale, q_positions=qp,
        k_positions=kp, causal=causal, window=window, chunk=chunk,
    )
    for name, a, b in zip("qkv", got, want, strict=True):
        assert not a.isnan().any(), name
        torch.testing.assert_close(a, b, msg=f"d{name}")


def test_split_blocks_merge_to_the_whole_and_backward_per_block_sums() -> None:
    """Two key blocks, forward each and merge (in place through ``into`` and with ``merge``),
    then each block's backward from the global lse: equal to attention over all the keys."""
    q, k, v = inputs(1, 4, 2, 9, 14, 6, 4, seed=3)
    qp, kp = torch.arange(5, 14), torch.arange(14)
    causal, window, scale = True, (7, 0), 1 / math.sqrt(6)
    mask = allowed(qp.tolist(), kp.tolist(), causal, window)
    want_out = attnkit.attention(q, k, v, mask=mask, backend="reference")
    _, want_lse = ref_out_lse(q, k, v, mask, scale)
    parts = [(0, 6), (6, 14)]
    kw = dict(scale=scale, q_positions=qp, causal=causal, window=window, chunk=4)
    a = block_forward(q.detach(), k[:, :, :6].detach(), v[:, :, :6].detach(),
                      k_positions=kp[:6], **kw)
    b = block_forward(q.detach(), k[:, :, 6:].detach(), v[:, :, 6:].detach(),
                      k_positions=kp[6:], **kw)
    out, lse = merge(*a, *b)
    torch.testing.assert_close(out, want_out.detach())
    torch.testing.assert_close(lse.float(), want_lse)
    acc = block_forward(q.detach(), k[:, :, :6].detach(), v[:, :, :6].detach(),
                        k_positions=kp[:6], **kw)
    block_forward(q.detach(), k[:, :, 6:].detach(), v[:, :, 6:].detach(), k_positions=kp[6:],
                  into=acc, **kw)
    torch.testing.assert_close(acc[0], want_out.detach())

    dout = torch.randn(out.shape, dtype=torch.float64)
    want = torch.autograd.grad(want_out, (q, k, v), dout)
    dq = torch.zeros_like(q)
    dks, dvs = [], []
    for k0, k1 in parts:
        grads = block_backward(
            q.detach(), k[:, :, k0:k1].detach(), v[:, :, k0:k1].detach(), out, lse, dout,
            k_positions=kp[k0:k1], **kw,
        )
        dq += grads[0]
        dks.append(grads[1])
        dvs.append(grads[2])
    torch.testing.assert_close(dq, want[0])
    torch.testing.assert_close(torch.cat(dks, dim=2), want[1])
    torch.testing.assert_close(torch.cat(dvs, dim=2), want[2])


def test_low_precision_computes_in_float32() -> None:
    q, k, v = inputs(1, 2, 2, 16, 16, 8, 8, dtype=torch.bfloat16)
    pos = torch.arange(16)
    out, lse = block_forward(q.detach(), k.detach(), v.detach(), scale=8**-0.5, q_positions=pos,
                             k_positions=pos, causal=True)
    assert out.dtype == lse.dtype == torch.float32
    want = attnkit.attention(q.float(), k.float(), v.float(), causal=True, backend="reference")
    torch.testing.assert_close(out, want.detach(), atol=1e-5, rtol=1e-5)


def test_any_visible_agrees_with_the_rule() -> None:
    gen = torch.Generator().manual_seed(5)
    for _ in range(40):
        qp = torch.randint(0, 30, (4,), generator=gen)
        kp = torch.randint(0, 30, (5,), generator=gen).sort().values
        for causal, window in [(True, None), (False, (2, 1)), (True, (3, 0)), (False, None)]:
            want = bool(allowed(qp.tolist(), kp.tolist(), causal, window).any())
            assert any_visible(qp, kp, causal=causal, window=window) == want


def test_bad_input_is_named() -> None:
    q, k, v = (t.detach() for t in inputs(1, 2, 2, 3, 4, 5, 5))
    qp, kp = torch.arange(3), torch.arange(4)
    kw = dict(scale=1.0, q_positions=qp, k_positions=kp)
    with pytest.raises(ValueError, match="k_positions must have shape \\(4,\\)"):
        block_forward(q, k, v, scale=1.0, q_positions=qp, k_positions=torch.arange(5))
    with pytest.raises(ValueError, match="ascending"):
        block_forward(q, k, v, scale=1.0, q_positions=qp, k_positions=torch.tensor([0, 2, 1, 3]))
    with pytest.raises(TypeError, match="q_positions must be an integer tensor"):
        block_forward(q, k, v, scale=1.0, q_positions=qp.float(), k_positions=kp)
    with pytest.raises(ValueError, match="heads must divide"):
        block_forward(q, k[:, :1].repeat(1, 3, 1, 1), v[:, :1].repeat(1, 3, 1, 1), **kw)
    with pytest.raises(ValueError, match="window"):
        block_forward(q, k, v, window=(1, -1), **kw)
    with pytest.raises(ValueError, match="scale"):
        block_forward(q, k, v, scale=math.nan, q_positions=qp, k_positions=kp)
    with pytest.raises(ValueError, match="chunk"):
        block_forward(q, k, v, chunk=0, **kw)
    with pytest.raises(TypeError, match="floating"):
        block_forward(q.long(), k, v, **kw)
    with pytest.raises(ValueError, match="dout must have shape"):
        block_backward(q, k, v, q, q[..., 0], q[:, :, :2], **kw)
