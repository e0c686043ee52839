"""Softmax attention of one block of queries against one block of keys, at global positions.

The per-block math of ring attention (:mod:`attnkit.distributed.ring`): each rank holds a
block of queries and, in turn, each block of keys and values; the blocks sit at arbitrary
(global) positions, given as integer tensors, so causal and banded masks are exact whatever
slice of the sequence a block is. Queries are processed in chunks of ``chunk`` positions, so
the scores in memory are ``O(chunk · Lk)``, never ``O(Lq · Lk)``; for each chunk only the keys
it may see are computed (a chunk that sees none is skipped).

Forward returns the block's normalised output and its log-sum-exp; two blocks' results are
combined with :func:`merge` (FORMULAS.md, "Merging two partial results")::

    lse = log(e^{lse_a} + e^{lse_b});  O = e^{lse_a − lse} O_a + e^{lse_b − lse} O_b

Backward recomputes the block from the *global* log-sum-exp (FlashAttention's backward;
Dao et al. 2022): ``P = exp(S − lse)``, ``D = rowsum(dO ∘ O)``, ``dS = P ∘ (dO Vᵀ − D)``,
``dQ = dS K · scale``, ``dK = dSᵀ Q · scale``, ``dV = Pᵀ dO``.

Visibility: the key at position ``j`` is visible to the query at position ``i`` when
``j ≤ i`` (``causal``) and ``i − left ≤ j ≤ i + right`` (``window=(left, right)``). A query
with no visible key gets output 0 and log-sum-exp ``−inf`` (never NaN).

Shape legend:
    B   batch
    Hq  query heads             Hkv  key/value heads (divides Hq; G = Hq // Hkv)
    Lq  queries of the block    Lk   keys of the block
    D   query/key head dim      Dv   value head dim
    C   a chunk of queries      K    the keys one chunk sees

Results are in the compute dtype: float32 for float16/bfloat16/float32 inputs, float64 for
float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnkit.kernels._blocks import compute_dtype
from attnkit.kernels.plan import check_qkv, check_window

DEFAULT_CHUNK = 256

__all__ = [
    "DEFAULT_CHUNK",
    "any_visible",
    "block_backward",
    "block_forward",
    "merge",
    "merge_",
]


# ---------------------------------------------------------------------------------------------
# Validation


def _check_positions(name: str, positions: Tensor, length: int, *, ascending: bool) -> None:
    if not isinstance(positions, Tensor):
        raise TypeError(f"{name} must be an integer tensor, got {type(positions).__name__}")
    if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {positions.dtype}")
    if positions.dim() != 1 or positions.shape[0] != length:
        raise ValueError(
            f"{name} must have shape ({length},) (one position per row), got "
            f"{tuple(positions.shape)}"
        )
    if ascending and length > 1 and not bool((positions[1:] >= positions[:-1]).all()):
        raise ValueError(f"{name} must be in ascending order")



# ---------------------------------------------------------------------------------------------
# Planning: which keys each chunk of queries sees


def _key_span(
    q_pos: list[int], k_pos: Tensor, causal: bool, window: tuple[int, int] | None
) -> tuple[int, int, bool]:
    """``(k0, k1, full)``: the keys ``[k0, k1)`` any query of the chunk may see, and whether
    every query sees all of them (then no mask is needed). ``k_pos`` ascending, on the CPU."""
    lo_q, hi_q = min(q_pos), max(q_pos)
    lo, hi = -math.inf, math.inf
    if window is not None:
        lo, hi = lo_q - window[0], hi_q + window[1]
    if causal:
        hi = min(hi, hi_q)
    k0 = 0 if lo == -math.inf else int(torch.searchsorted(k_pos, int(lo), right=False))
    n = k_pos.shape[0]
    k1 = n if hi == math.inf else int(torch.searchsorted(k_pos, int(hi), right=True))
    if k0 >= k1:
        return k0, k0, False
    first, last = int(k_pos[k0]), int(k_pos[k1 - 1])
    full = True
    if causal and last > lo_q:
        full = False
    if window is not None and (first < hi_q - window[0] or last > lo_q + window[1]):
        full = False
    return k0, k1, full


def _allowed(
    q_pos: Tensor, k_pos: Tensor, causal: bool, window: tuple[int, int] | None
) -> Tensor:
    """``(C, K)`` bool, True where the key may be seen."""
    i, j = q_pos[:, None], k_pos[None, :]  # (C, 1), (1, K)
    ok = torch.ones(q_pos.shape[0], k_pos.shape[0], dtype=torch.bool, device=q_pos.device)
    if causal:
        ok &= j <= i
    if window is not None:
        ok &= (j >= i - window[0]) & (j <= i + window[1])
    return ok  # (C, K)


def any_visible(
    q_positions: Tensor,
    k_positions: Tensor,
    *,
    causal: bool = False,
    window: tuple[int, int] | None = None,
) -> bool:
    """Whether any query at ``q_positions`` may see any key at ``k_positions`` (ascending).

    Raises:
        TypeError, ValueError: positions that are not 1-D integer tensors; a bad window.
    """
    window = check_window(window)
    _check_positions("q_positions", q_positions, q_positions.shape[0], ascending=False)
    _check_positions("k_positions", k_positions, k_positions.shape[0], ascending=True)
    if q_positions.numel() == 0 or k_positions.numel() == 0:
        return False
    q_cpu, k_cpu = q_positions.cpu(), k_positions.cpu()
    if not causal and window is None:
        return True
    # Exact test per query: the first visible key position is searched for every query.
    lo = q_cpu - window[0] if window is not None else torch.full_like(q_cpu, -(2**62))
    hi = q_cpu + window[1] if window is not None else torch.full_like(q_cpu, 2**62)
    if causal:
        hi = torch.minimum(hi, q_cpu)
    first = torch.searchsorted(k_cpu, lo, right=False)  # (Lq,)
    last = torch.searchsorted(k_cpu, hi, right=True)  # (Lq,)
    return bool((last > first).any())


def _chunks(
    q_pos_cpu: Tensor, k_pos_cpu: Tensor, chunk: int, causal: bool, window
) -> list[tuple[int, int, int, int, bool]]:
    """``(c0, c1, k0, k1, full)`` for every chunk of queries that sees at least one key."""
    out = []
    q_list = q_pos_cpu.tolist()
    for c0 in range(0, len(q_list), chunk):
        c1 = min(c0 + chunk, len(q_list))
        if not causal and window is None:
            out.append((c0, c1, 0, k_pos_cpu.shape[0], True))
            continue
        k0, k1, full = _key_span(q_list[c0:c1], k_pos_cpu, causal, window)
        if k1 > k0:
            out.append((c0, c1, k0, k1, full))
    return out


def _check_chunk(chunk: object) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    return chunk


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    return float(scale)


# ---------------------------------------------------------------------------------------------
# Merging partial results


def merge(out_a: Tensor, lse_a: Tensor, out_b: Tensor, lse_b: Tensor) -> tuple[Tensor, Tensor]:
    """Combine two partial results over disjoint key sets (FORMULAS.md, "Merging two partial
    results"). ``out (..., L, Dv)``, ``lse (..., L)``; rows empty on both sides stay 0/−inf.

    Raises:
        ValueError: shapes that do not match.
    """
    if out_a.shape != out_b.shape or lse_a.shape != lse_b.shape or out_a.shape[:-1] != lse_a.shape:
        raise ValueError(
            f"merge needs out (..., L, Dv) and lse (..., L) of equal shapes, got out "
            f"{tuple(out_a.shape)} / {tuple(out_b.shape)}, lse {tuple(lse_a.shape)} / "
            f"{tuple(lse_b.shape)}"
        )
    out, lse = out_a.clone(), lse_a.clone()
    merge_(out, lse, out_b, lse_b)
    return out, lse


def merge_(out: Tensor, lse: Tensor, out_b: Tensor, lse_b: Tensor) -> None:
    """:func:`merge` into ``out`` and ``lse`` in place (no checks; shapes as there)."""
    new = torch.logaddexp(lse, lse_b)  # (..., L); -inf where both are empty
    empty = torch.isneginf(new)
    safe = new.masked_fill(empty, 0.0)
    w_a = torch.exp(lse - safe).masked_fill_(empty, 0.0)  # (..., L)
    w_b = torch.exp(lse_b - safe).masked_fill_(empty, 0.0)  # (..., L)
    out.mul_(w_a.unsqueeze(-1)).add_(out_b * w_b.unsqueeze(-1))
    lse.copy_(new)


# ---------------------------------------------------------------------------------------------
# Forward


def block_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    q_positions: Tensor,
    k_positions: Tensor,
    causal: bool = False,
    window: tuple[int, int] | None = None,
    chunk: int = DEFAULT_CHUNK,
    into: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Softmax attention of ``q`` over this block of keys: ``(out, lse)``.

    Args:
        q: ``(B, Hq, Lq, D)`` floating point.
        k: ``(B, Hkv, Lk, D)``; ``Hkv`` divides ``Hq`` (grouped-query).
        v: ``(B, Hkv, Lk, Dv)``.
        scale: multiplies ``q kᵀ`` (usually ``1/√D``).
        q_positions: ``(Lq,)`` integer global positions of the queries.
        k_positions: ``(Lk,)`` integer global positions of the keys, ascending.
        causal, window: see the module docstring.
        chunk: queries per chunk (memory ``O(chunk · Lk)`` per head).
        into: ``(out, lse)`` running results of other key blocks ``(B, Hq, Lq, Dv)``,
            ``(B, Hq, Lq)`` in the compute dtype: this block is merged into them in place and
            they are returned.

    Returns:
        ``out (B, Hq, Lq, Dv)`` and ``lse (B, Hq, Lq)`` in the compute dtype; rows with no
        visible key have out 0 and lse ``−inf``.

    Raises:
        TypeError: non-tensors, non-floating or mixed dtypes, non-integer positions.
        ValueError: mismatched shapes or devices, positions of the wrong length or keys not
            ascending, a bad window, scale or chunk, ``into`` of the wrong shape.
    """
    b, hq, hkv, lq, lk, d, _, dv = check_qkv(q, k, v, same_head_dim=True)
    _check_positions("q_positions", q_positions, lq, ascending=False)
    _check_positions("k_positions", k_positions, lk, ascending=True)
    window, scale, chunk = check_window(window), _check_scale(scale), _check_chunk(chunk)
    cdt, g = compute_dtype(q.dtype), hq // hkv
    if into is None:
        out = torch.zeros(b, hq, lq, dv, dtype=cdt, device=q.device)  # (B, Hq, Lq, Dv)
        lse = torch.full((b, hq, lq), -math.inf, dtype=cdt, device=q.device)  # (B, Hq, Lq)
        fresh = True
    else:
        out, lse = into
        if tuple(out.shape) != (b, hq, lq, dv) or tuple(lse.shape) != (b, hq, lq):
            raise ValueError(
                f"into must be out {(b, hq, lq, dv)} and lse {(b, hq, lq)}, got "
                f"{tuple(out.shape)} and {tuple(lse.shape)}"
            )
        if out.dtype != cdt or lse.dtype != cdt:
            raise TypeError(f"into must be in the compute dtype {cdt}, got {out.dtype}/{lse.dtype}")
        if not (out.is_contiguous() and lse.is_contiguous()):
            raise ValueError("into must hold contiguous tensors (they are updated through views)")
        fresh = False
    plan = _chunks(q_positions.cpu(), k_positions.cpu(), chunk, causal, window)
    if not plan:
        return out, lse
    q5 = q.reshape(b, hkv, g, lq, d)  # (B, Hkv, G, Lq, D)
    out5 = out.view(b, hkv, g, lq, dv)  # (B, Hkv, G, Lq, Dv)
    lse4 = lse.view(b, hkv, g, lq)  # (B, Hkv, G, Lq)
    q_pos_dev, k_pos_dev = q_positions.to(q.device), k_positions.to(q.device)
    for c0, c1, k0, k1, full in plan:
        qc = q5[:, :, :, c0:c1].to(cdt)  # (B, Hkv, G, C, D)
        kc = k[:, :, k0:k1].to(cdt).unsqueeze(2)  # (B, Hkv, 1, K, D)
        vc = v[:, :, k0:k1].to(cdt).unsqueeze(2)  # (B, Hkv, 1, K, Dv)
        s = torch.matmul(qc, kc.transpose(-1, -2)).mul_(scale)  # (B, Hkv, G, C, K)
        if not full:
            ok = _allowed(q_pos_dev[c0:c1], k_pos_dev[k0:k1], causal, window)  # (C, K)
            s.masked_fill_(~ok, -math.inf)
        m = s.amax(dim=-1, keepdim=True)  # (B, Hkv, G, C, 1)
        m = m.masked_fill_(torch.isneginf(m), 0.0)
        p = s.sub_(m).exp_()  # (B, Hkv, G, C, K); masked entries exp(-inf) = 0
        denom = p.sum(dim=-1, keepdim=True)  # (B, Hkv, G, C, 1)
        o = torch.matmul(p, vc)  # (B, Hkv, G, C, Dv)
        o.div_(denom.clamp_min(torch.finfo(cdt).tiny))  # empty rows: 0 / tiny = 0
        block_lse = (m + denom.log()).squeeze(-1)  # (B, Hkv, G, C); -inf for empty rows
        if fresh:
            out5[:, :, :, c0:c1] = o
            lse4[:, :, :, c0:c1] = block_lse
        else:
            merge_(out5[:, :, :, c0:c1], lse4[:, :, :, c0:c1], o, block_lse)  # in place
    return out, lse


# ---------------------------------------------------------------------------------------------
# Backward


def block_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    dout: Tensor,
    *,
    scale: float,
    q_positions: Tensor,
    k_positions: Tensor,
    causal: bool = False,
    window: tuple[int, int] | None = None,
    chunk: int = DEFAULT_CHUNK,
    delta: Tensor | None = None,
    into: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of this block's share of the attention: ``(dq, dk, dv)``.

    ``out`` and ``lse`` are the *final* results over every key block (what
    :func:`block_forward` and :func:`merge` produced), so ``P = exp(S − lse)`` are the exact
    global probabilities of this block's keys.

    Args:
        q, k, v, scale, q_positions, k_positions, causal, window, chunk: as
            :func:`block_forward`.
        out: ``(B, Hq, Lq, Dv)`` the final attention output.
        lse: ``(B, Hq, Lq)`` its final log-sum-exp (``−inf`` for empty rows).
        dout: ``(B, Hq, Lq, Dv)`` the gradient of the loss with respect to ``out``.
        delta: ``(B, Hq, Lq)`` ``rowsum(dout ∘ out)`` if already computed (it is the same for
            every key block).
        into: ``(dq, dk, dv)`` in the compute dtype to accumulate into in place (and return).

    Returns:
        ``dq (B, Hq, Lq, D)``, ``dk (B, Hkv, Lk, D)``, ``dv (B, Hkv, Lk, Dv)`` in the compute
        dtype.

    Raises:
        TypeError, ValueError: as :func:`block_forward`; ``out``, ``lse``, ``dout``, ``delta``
            or ``into`` of the wrong shape.
    """
    b, hq, hkv, lq, lk, d, _, dv = check_qkv(q, k, v, same_head_dim=True)
    _check_positions("q_positions", q_positions, lq, ascending=False)
    _check_positions("k_positions", k_positions, lk, ascending=True)
    window, scale, chunk = check_window(window), _check_scale(scale), _check_chunk(chunk)
    expect = {"out": (b, hq, lq, dv), "lse": (b, hq, lq), "dout": (b, hq, lq, dv)}
    for name, t in (("out", out), ("lse", lse), ("dout", dout)):
        if not isinstance(t, Tensor) or tuple(t.shape) != expect[name]:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape {expect[name]}, got {shape}")
    cdt, g = compute_dtype(q.dtype), hq // hkv
    if delta is None:
        delta = (dout.to(cdt) * out.to(cdt)).sum(dim=-1)  # (B, Hq, Lq)
    elif tuple(delta.shape) != (b, hq, lq):
        raise ValueError(f"delta must have shape {(b, hq, lq)}, got {tuple(delta.shape)}")
    if into is None:
        dq = torch.zeros(b, hq, lq, d, dtype=cdt, device=q.device)  # (B, Hq, Lq, D)
        dk = torch.zeros(b, hkv, lk, d, dtype=cdt, device=q.device)  # (B, Hkv, Lk, D)
        dvv = torch.zeros(b, hkv, lk, dv, dtype=cdt, device=q.device)  # (B, Hkv, Lk, Dv)
    else:
        dq, dk, dvv = into
        shapes = ((b, hq, lq, d), (b, hkv, lk, d), (b, hkv, lk, dv))
        if (
            tuple(tuple(t.shape) for t in into) != shapes
            or any(t.dtype != cdt or not t.is_contiguous() for t in into)
        ):
            raise ValueError(
                f"into must be contiguous dq, dk, dv of shapes {shapes} in {cdt}, got "
                f"{[(tuple(t.shape), t.dtype) for t in into]}"
            )
    plan = _chunks(q_positions.cpu(), k_positions.cpu(), chunk, causal, window)
    if not plan:
        return dq, dk, dvv
    q5 = q.reshape(b, hkv, g, lq, d)  # (B, Hkv, G, Lq, D)
    do5 = dout.reshape(b, hkv, g, lq, dv)  # (B, Hkv, G, Lq, Dv)
    # Rows with no visible key: lse = -inf; +inf makes exp(S - lse) = 0 there.
    lse_safe = lse.to(cdt).masked_fill(torch.isneginf(lse), math.inf)
    lse4 = lse_safe.reshape(b, hkv, g, lq)  # (B, Hkv, G, Lq)
    delta4 = delta.to(cdt).reshape(b, hkv, g, lq)  # (B, Hkv, G, Lq)
    dq5 = dq.view(b, hkv, g, lq, d)  # (B, Hkv, G, Lq, D)
    q_pos_dev, k_pos_dev = q_positions.to(q.device), k_positions.to(q.device)
    for c0, c1, k0, k1, full in plan:
        c = c1 - c0
        qc = q5[:, :, :, c0:c1].to(cdt)  # (B, Hkv, G, C, D)
        doc = do5[:, :, :, c0:c1].to(cdt)  # (B, Hkv, G, C, Dv)
        kc = k[:, :, k0:k1].to(cdt).unsqueeze(2)  # (B, Hkv, 1, K, D)
        vc = v[:, :, k0:k1].to(cdt).unsqueeze(2)  # (B, Hkv, 1, K, Dv)
        s = torch.matmul(qc, kc.transpose(-1, -2)).mul_(scale)  # (B, Hkv, G, C, K)
        if not full:
            ok = _allowed(q_pos_dev[c0:c1], k_pos_dev[k0:k1], causal, window)  # (C, K)
            s.masked_fill_(~ok, -math.inf)
        p = s.sub_(lse4[:, :, :, c0:c1, None]).exp_()  # (B, Hkv, G, C, K)
        dp = torch.matmul(doc, vc.transpose(-1, -2))  # (B, Hkv, G, C, K)
        ds = dp.sub_(delta4[:, :, :, c0:c1, None]).mul_(p)  # (B, Hkv, G, C, K)
        dq5[:, :, :, c0:c1] += torch.matmul(ds, kc).mul_(scale)  # (B, Hkv, G, C, D)
        kk = k1 - k0
        ds_rows = ds.reshape(b, hkv, g * c, kk)  # (B, Hkv, G·C, K)
        p_rows = p.reshape(b, hkv, g * c, kk)  # (B, Hkv, G·C, K)
        q_rows = qc.reshape(b, hkv, g * c, d)  # (B, Hkv, G·C, D)
        do_rows = doc.reshape(b, hkv, g * c, dv)  # (B, Hkv, G·C, Dv)
        dk[:, :, k0:k1] += torch.matmul(ds_rows.transpose(-1, -2), q_rows).mul_(scale)
        dvv[:, :, k0:k1] += torch.matmul(p_rows.transpose(-1, -2), do_rows)
    return dq, dk, dvv
