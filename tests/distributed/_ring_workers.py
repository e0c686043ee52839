"""What each spawned rank runs in ``test_ring.py`` (module level, so ``spawn`` can import it).

Every rank draws the same full sequence from a seed, keeps its slice, runs ring attention and
compares its slice of the output and of the gradients with single-process
``attnkit.attention(..., backend="reference")`` on the full sequence.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist

import attnkit
from attnkit.distributed import gather_sequence, ring_attention, split_sequence


def _full(case: dict[str, Any], world: int):
    b, hq, hkv, d, dv = case.get("shape", (2, 2, 2, 4, 3))
    lq = case.get("q_local", case["local"]) * world
    lk = case["local"] * world
    dtype = case.get("dtype", torch.float64)
    gen = torch.Generator().manual_seed(case.get("seed", 0))

    def make(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()

    q, k, v = make(b, hq, lq, d), make(b, hkv, lk, d), make(b, hkv, lk, dv)
    grad = torch.randn(b, hq, lq, dv, generator=gen, dtype=torch.float64).to(dtype)
    return q, k, v, grad


def check_case(rank: int, world: int, case: dict[str, Any]) -> None:
    q, k, v, grad = _full(case, world)
    causal, window = case.get("causal", False), case.get("window")
    layout = case.get("layout", "contiguous")
    want = attnkit.attention(q, k, v, causal=causal, window=window, backend="reference")
    want_grads = torch.autograd.grad(want, (q, k, v), grad)

    def mine(t: torch.Tensor) -> torch.Tensor:
        return split_sequence(t.detach(), rank=rank, world=world, layout=layout)

    ql, kl, vl = (mine(t).clone().requires_grad_() for t in (q, k, v))
    out = ring_attention(
        ql, kl, vl, causal=causal, window=window, layout=layout,
        kv_chunks=case.get("kv_chunks", 1), chunk=case.get("chunk", 256),
    )
    tol = {} if q.dtype == torch.float64 else {"atol": 2e-5, "rtol": 2e-5}
    where = f"rank {rank}/{world} case {case}"
    assert out.dtype == q.dtype and not out.isnan().any(), where
    torch.testing.assert_close(out, mine(want), msg=lambda m: f"{where}: output: {m}", **tol)
    out.backward(mine(grad))
    for name, got, full in zip("qkv", (ql, kl, vl), want_grads, strict=True):
        torch.testing.assert_close(
            got.grad, mine(full), msg=lambda m, n=name: f"{where}: d{n}: {m}", **tol
        )
    gathered = gather_sequence(out.detach(), layout=layout)
    torch.testing.assert_close(gathered, want.detach(), **tol)


def ring_cases(rank: int, world: int, cases: list[dict[str, Any]]) -> None:
    for case in cases:
        check_case(rank, world, case)


def bad_inputs(rank: int, world: int) -> None:
    """Every rank raises the same kind of error, then a valid call still works."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 4, 3, generator=gen) for _ in range(3))

    # Mismatched slices: rank 1's queries are longer.
    q_bad = torch.randn(1, 2, 6, 3) if rank == 1 else q
    with pytest.raises(ValueError, match=r"disagree.*q_len: rank 0 4, rank 1 6"):
        ring_attention(q_bad, k, v)

    # One rank's input is invalid on its own: it names its problem, the other names the rank.
    q3 = q[0] if rank == 1 else q
    expected = r"q must have 4 dims \(batch, heads, length, dim\)" if rank == 1 else r"rank\(s\) \[1\]"
    with pytest.raises(ValueError, match=expected):
        ring_attention(q3, k, v)

    # Options must agree too.
    with pytest.raises(ValueError, match="causal: rank 0 0, rank 1 1"):
        ring_attention(q, k, v, causal=rank == 1)
    with pytest.raises(ValueError, match="layout"):
        ring_attention(q, k, v, layout="spiral")
    with pytest.raises(TypeError, match="floating"):
        ring_attention(q.long(), k, v)

    # A group of one process.
    singles = [dist.new_group([r]) for r in range(world)]
    with pytest.raises(ValueError, match="group has one process"):
        ring_attention(q, k, v, group=singles[rank])

    # Parts of different shapes cannot be gathered.
    with pytest.raises(ValueError, match="disagree"):
        gather_sequence(q if rank == 0 else q[:, :1])

    # Nothing is left half-sent: a valid call still agrees with the reference.
    check_case(rank, world, {"local": 4, "causal": True})
