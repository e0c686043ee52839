"""Softmax attention of one block of queries against one block of keys, at global positions.

The per-step math of ring attention (:mod:`attnkit.distributed.ring`): each rank holds a block
of queries and, in turn, each block of keys and values; the blocks sit at arbitrary (global)
positions, given as integer tensors, so causal and banded masks are exact whatever slice of
the sequence a block is. The positions are cut into **runs** of consecutive positions (one per
rank slice: one run in the contiguous layout, two in the zigzag one); for each pair of a query
run and a key run, the kernels' own machinery does the work: a
:class:`~attnkit.kernels.visibility.Visibility` whose query offset places the runs relative to
each other, and the online softmax and FlashAttention-2 backward of
:mod:`attnkit.kernels.online` over the tiles it leaves visible (tiles a query chunk cannot see
are skipped). Queries go ``chunk`` at a time, so the scores in memory are
``O(chunk · Lk)``.

Forward returns the block's output and log-sum-exp; two blocks' results are combined with
:func:`merge` (FORMULAS.md, "Merging two partial results"). Backward recomputes the block from
the *global* log-sum-exp (``P = exp(S − lse)``, ``D = rowsum(dO ∘ O)``).

Visibility: the key at position ``j`` is visible to the query at position ``i`` when ``j ≤ i``
(``causal``) and ``i − left ≤ j ≤ i + right`` (``window=(left, right)``). A query with no
visible key gets output 0 and log-sum-exp ``−inf`` (never NaN).

Shape legend: B batch, Hq/Hkv query/key-value heads (G = Hq/Hkv), Lq/Lk the block's queries/keys,
D/Dv dims. Results are in the compute dtype: float32 for 16-bit and float32 inputs, float64
for float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from attnkit._validate import check_qkv, check_window
from attnkit.kernels import online
from attnkit.kernels.online import compute_dtype, to_rows
from attnkit.kernels.tile_scores import DotScores
from attnkit.kernels.tiling import Tiling
from attnkit.kernels.visibility import Visibility, clip_band

DEFAULT_CHUNK = 256
Runs = list[tuple[int, int, int]]  # (first index, end index, position of the first)

__all__ = ["DEFAULT_CHUNK", "any_visible", "block_backward", "block_forward", "merge"]


def check_positions(name: str, positions: object, length: int, *, ascending: bool) -> Tensor:
    """``positions`` as a 1-D integer tensor of ``length`` entries.

    Raises:
        TypeError: not an integer tensor. ValueError: the wrong shape, or (``ascending``) not
            in ascending order.
    """
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
    return positions


def runs(positions: Tensor) -> Runs:
    """``positions`` as runs of consecutive positions: ``[(i0, i1, position of i0), ...]``."""
    pos = positions.tolist()
    out: Runs = []
    start = 0
    for i in range(1, len(pos) + 1):
        if i == len(pos) or pos[i] != pos[i - 1] + 1:
            out.append((start, i, pos[start]))
            start = i
    return out


class Block:
    """One block of queries over one block of keys: the tilings of its pairs of runs."""

    def __init__(
        self, shapes: tuple[int, int, int, int, int], q_runs: Runs, k_runs: Runs, *,
        causal: bool, window: tuple[int, int] | None, chunk: int, device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        batch, q_heads, kv_heads, q_len, kv_len = shapes
        left, right = clip_band(causal, window)
        self.tilings = [
            Tiling(
                Visibility(batch=batch, heads=q_heads, q_len=q_len, kv_len=kv_len, device=device,
                           left=left, right=right, offset=pq - q0 - pk + k0),
                kv_heads, chunk, kv_len, dtype, q_range=(q0, q1), k_range=(k0, k1),
            )
            for q0, q1, pq in q_runs
            for k0, k1, pk in k_runs
        ]

    def visible(self) -> Iterator[Tiling]:
        """The tilings with at least one visible tile."""
        return (t for t in self.tilings if next(t.tiles(), None) is not None)


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
    check_positions("q_positions", q_positions, q_positions.shape[0], ascending=False)
    check_positions("k_positions", k_positions, k_positions.shape[0], ascending=True)
    if q_positions.numel() == 0 or k_positions.numel() == 0:
        return False
    block = Block((1, 1, 1, q_positions.shape[0], k_positions.shape[0]), runs(q_positions),
                  runs(k_positions), causal=causal, window=window, chunk=1,
                  device=q_positions.device)
    return next(block.visible(), None) is not None


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
    online.merge_(out, lse, out_b.clone(), lse_b)
    return out, lse


def _check(q, k, v, scale, q_positions, k_positions, window, chunk) -> tuple:
    b, hq, hkv, lq, lk, d, _, dv = check_qkv(q, k, v, same_head_dim=True)
    check_positions("q_positions", q_positions, lq, ascending=False)
    check_positions("k_positions", k_positions, lk, ascending=True)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    return (b, hq, hkv, lq, lk, d, dv), check_window(window)


def _check_into(name: str, got: tuple[Tensor, ...], shapes: tuple[tuple[int, ...], ...],
                dtype: torch.dtype) -> None:
    if tuple(tuple(t.shape) for t in got) != shapes or any(
        t.dtype != dtype or not t.is_contiguous() for t in got
    ):
        raise ValueError(
            f"{name} must be contiguous tensors of shapes {shapes} in {dtype} (they are updated "
            f"through views), got {[(tuple(t.shape), t.dtype) for t in got]}"
        )


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
    block: Block | None = None,
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
        chunk: queries per tile (memory ``O(chunk · Lk)`` per head).
        into: ``(out, lse)`` running results of other key blocks ``(B, Hq, Lq, Dv)``,
            ``(B, Hq, Lq)`` in the compute dtype: this block is merged into them in place and
            they are returned.
        block: the :class:`Block` of these positions, when the caller keeps it across calls.

    Returns:
        ``out (B, Hq, Lq, Dv)`` and ``lse (B, Hq, Lq)`` in the compute dtype; rows with no
        visible key have out 0 and lse ``−inf``.

    Raises:
        TypeError: non-tensors, non-floating or mixed dtypes, non-integer positions.
        ValueError: mismatched shapes or devices, positions of the wrong length or keys not
            ascending, a bad window, scale or chunk, ``into`` of the wrong shape.
    """
    (b, hq, hkv, lq, lk, _, dv), window = _check(
        q, k, v, scale, q_positions, k_positions, window, chunk
    )
    cdt = compute_dtype(q.dtype)
    if into is None:
        into = (torch.zeros(b, hq, lq, dv, dtype=cdt, device=q.device),
                torch.full((b, hq, lq), -math.inf, dtype=cdt, device=q.device))
    _check_into("into", into, ((b, hq, lq, dv), (b, hq, lq)), cdt)
    out, lse = into
    if block is None:
        block = Block((b, hq, hkv, lq, lk), runs(q_positions), runs(k_positions), causal=causal,
                      window=window, chunk=chunk, device=q.device, dtype=cdt)
    qr = to_rows(q, hkv, cdt)  # (B·Hkv, G·Lq, D), a view of q in float32
    kr, vr = to_rows(k, hkv, cdt), to_rows(v, hkv, cdt)  # (B·Hkv, Lk, D|Dv)
    out_rows, lse_rows = to_rows(out, hkv, cdt), lse.view(b * hkv, -1)  # views
    for tiling in block.visible():
        scores = DotScores(qr, kr, tiling, scale=scale)
        online.forward(scores, vr, out_rows, lse_rows, tiling, fresh=False)
    return out, lse


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
    block: Block | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of this block's share of the attention: ``(dq, dk, dv)``.

    ``out`` and ``lse`` are the *final* results over every key block (what
    :func:`block_forward` and :func:`merge` produced), so ``P = exp(S − lse)`` are the exact
    global probabilities of this block's keys.

    Args:
        q, k, v, scale, q_positions, k_positions, causal, window, chunk, block: as
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
    (b, hq, hkv, lq, lk, d, dv), window = _check(
        q, k, v, scale, q_positions, k_positions, window, chunk
    )
    expect = {"out": (b, hq, lq, dv), "lse": (b, hq, lq), "dout": (b, hq, lq, dv)}
    for name, t in (("out", out), ("lse", lse), ("dout", dout), ("delta", delta)):
        shape = expect.get(name, (b, hq, lq))
        if (t is not None or name != "delta") and (
            not isinstance(t, Tensor) or tuple(t.shape) != shape
        ):
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape {shape}, got {got}")
    cdt = compute_dtype(q.dtype)
    if delta is None:
        delta = (dout.to(cdt) * out.to(cdt)).sum(dim=-1)  # (B, Hq, Lq)
    if into is None:
        into = (torch.zeros(b, hq, lq, d, dtype=cdt, device=q.device),
                torch.zeros(b, hkv, lk, d, dtype=cdt, device=q.device),
                torch.zeros(b, hkv, lk, dv, dtype=cdt, device=q.device))
    _check_into("into", into, ((b, hq, lq, d), (b, hkv, lk, d), (b, hkv, lk, dv)), cdt)
    dq, dk, dvv = into
    if block is None:
        block = Block((b, hq, hkv, lq, lk), runs(q_positions), runs(k_positions), causal=causal,
                      window=window, chunk=chunk, device=q.device, dtype=cdt)
    qr = to_rows(q, hkv, cdt)  # (B·Hkv, G·Lq, D), a view of q in float32
    kr, vr = to_rows(k, hkv, cdt), to_rows(v, hkv, cdt)  # (B·Hkv, Lk, D|Dv)
    grads = (to_rows(dq, hkv, cdt), to_rows(dk, hkv, cdt))  # views of dq, dk
    dout_rows = to_rows(dout, hkv, cdt)  # (B·Hkv, G·Lq, Dv)
    lse_rows = lse.to(cdt).reshape(b * hkv, -1)  # (B·Hkv, G·Lq)
    row_dot = delta.to(cdt).reshape(b * hkv, -1, 1)  # (B·Hkv, G·Lq, 1)
    for tiling in block.visible():
        online.backward(DotScores(qr, kr, tiling, grads, scale), dout_rows, vr, lse_rows,
                        row_dot, to_rows(dvv, hkv, cdt), tiling)
    return dq, dk, dvv
