"""Ring attention: softmax attention over a sequence split across the ranks of a process group.

Each of the ``P`` ranks holds a slice of the queries, keys and values (``(B, H, N/P, D)``;
:mod:`attnkit.distributed.layout` says which positions). The key/value blocks travel around
the ring — rank ``r`` sends to ``r+1`` and receives from ``r−1`` with
``torch.distributed.batch_isend_irecv`` — while the rank computes attention of its queries
over the block it holds (:func:`attnkit.distributed.block.block_forward`: the kernels' own
visibility and online softmax, with the blocks' global positions as offsets); after ``P`` steps
it has seen every block, the partial results merged with the log-sum-exp (FORMULAS.md,
"Merging two partial results"; Liu et al. 2023, "Ring attention with blockwise
transformers"). Blocks a mask hides entirely (causal, window) are not computed; they still
travel, since later ranks need them.

The backward pass is a ring too: the key/value blocks travel again, each with the gradient
``dK, dV`` accumulated so far by the ranks it visited; every rank adds its share, recomputed
from the saved global log-sum-exp (FlashAttention's backward), and after ``P`` steps each
block's gradient arrives home. No rank ever holds the whole sequence.

``kv_chunks`` splits each rank's key/value block into that many pieces that travel one after
another: a rank then holds two pieces in flight instead of two blocks (less memory), for
``kv_chunks`` times more, smaller messages.

Shape legend: B batch, Hq query heads, Hkv key/value heads, Lq / Lk this rank's query / key
length (``N/P``), D head dim, Dv value dim, Lp the keys of one piece.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from attnkit._validate import check_qkv, check_window
from attnkit.distributed.block import DEFAULT_CHUNK, Block, block_backward, block_forward, runs
from attnkit.distributed.group import agree, dtype_code, resolve_group
from attnkit.distributed.layout import LAYOUTS, sequence_positions
from attnkit.kernels.online import compute_dtype
from attnkit.kernels.visibility import bottom_right

WHAT = "ring_attention"
_NAMES = (
    "batch", "q_heads", "q_len", "head_dim", "kv_heads", "kv_len", "key_dim", "value_dim",
    "dtype", "causal", "window_left", "window_right", "scale", "layout", "kv_chunks", "chunk",
    "q_requires_grad", "k_requires_grad", "v_requires_grad",
)


@dataclass(frozen=True)
class _Plan:
    group: Any
    rank: int
    world: int
    scale: float
    causal: bool
    window: tuple[int, int] | None
    layout: str
    pieces: tuple[tuple[int, int], ...]  # [k0, k1) of each piece of a rank's key block
    chunk: int
    q_positions: Tensor  # (Lq,) this rank's global query positions
    kv_len: int
    blocks: dict[tuple[int, int], Block] = field(default_factory=dict)

    def k_positions(self, src: int, piece: int) -> Tensor:
        """Global positions ``(Lp,)`` of piece ``piece`` of rank ``src``'s keys."""
        k0, k1 = self.pieces[piece]
        whole = sequence_positions(self.kv_len, rank=src, world=self.world, layout=self.layout)
        return whole[k0:k1]

    def block(self, q: Tensor, k: Tensor, src: int, piece: int) -> Block:
        """The :class:`Block` of this rank's queries over that piece (made once per call)."""
        if (src, piece) not in self.blocks:
            b, hq, lq, _ = q.shape
            shapes = (b, hq, k.shape[1], lq, k.shape[2])
            self.blocks[(src, piece)] = Block(
                shapes, runs(self.q_positions), runs(self.k_positions(src, piece)),
                causal=self.causal, window=self.window, chunk=self.chunk, device=q.device,
                dtype=compute_dtype(q.dtype),
            )
        return self.blocks[(src, piece)]


class _Shift:
    """One asynchronous ring step: send ``tensors`` to the next rank, receive as many of the
    same shapes from the previous rank. :meth:`wait` returns the received tensors."""

    def __init__(self, plan: _Plan, tensors: list[Tensor], tag: int) -> None:
        self.sent = tensors  # kept alive until the sends complete
        self.received = [torch.empty_like(t) for t in tensors]
        nxt, prev = (plan.rank + 1) % plan.world, (plan.rank - 1) % plan.world
        ops = [
            dist.P2POp(dist.isend, t, group=plan.group, group_peer=nxt, tag=tag + i)
            for i, t in enumerate(tensors)
        ] + [
            dist.P2POp(dist.irecv, t, group=plan.group, group_peer=prev, tag=tag + i)
            for i, t in enumerate(self.received)
        ]
        self.works = dist.batch_isend_irecv(ops)

    def wait(self) -> list[Tensor]:
        for work in self.works:
            work.wait()
        self.sent = []
        return self.received


_KV_TAG, _GRAD_TAG = 0, 2


def _piece(t: Tensor, bounds: tuple[int, int]) -> Tensor:
    k0, k1 = bounds
    if k0 == 0 and k1 == t.shape[2] and t.is_contiguous():
        return t
    return t[:, :, k0:k1].contiguous()  # (B, Hkv, Lp, ·)


def _forward(q: Tensor, k: Tensor, v: Tensor, plan: _Plan) -> tuple[Tensor, Tensor]:
    """``out (B, Hq, Lq, Dv)`` in the compute dtype and ``lse (B, Hq, Lq)``."""
    b, hq, lq, _ = q.shape
    cdt = compute_dtype(q.dtype)
    out = torch.zeros(b, hq, lq, v.shape[-1], dtype=cdt, device=q.device)  # (B, Hq, Lq, Dv)
    lse = torch.full((b, hq, lq), -math.inf, dtype=cdt, device=q.device)  # (B, Hq, Lq)
    for piece, bounds in enumerate(plan.pieces):
        current = [_piece(k, bounds), _piece(v, bounds)]
        for step in range(plan.world):
            src = (plan.rank - step) % plan.world
            shift = _Shift(plan, current, _KV_TAG) if step < plan.world - 1 else None
            block_forward(
                q, current[0], current[1], scale=plan.scale, q_positions=plan.q_positions,
                k_positions=plan.k_positions(src, piece), causal=plan.causal,
                window=plan.window, chunk=plan.chunk, into=(out, lse),
                block=plan.block(q, current[0], src, piece),
            )
            if shift is not None:
                current = shift.wait()
    return out, lse


def _backward(
    q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dout: Tensor, plan: _Plan
) -> tuple[Tensor, Tensor, Tensor]:
    """``dq, dk, dv`` in the compute dtype."""
    cdt = compute_dtype(q.dtype)
    delta = (dout.to(cdt) * out.to(cdt)).sum(dim=-1)  # (B, Hq, Lq)
    dq = torch.zeros(q.shape, dtype=cdt, device=q.device)  # (B, Hq, Lq, D)
    dk = torch.zeros(k.shape, dtype=cdt, device=q.device)  # (B, Hkv, Lk, D)
    dv = torch.zeros(v.shape, dtype=cdt, device=q.device)  # (B, Hkv, Lk, Dv)
    for piece, bounds in enumerate(plan.pieces):
        current = [_piece(k, bounds), _piece(v, bounds)]
        grads: _Shift | None = None  # the accumulated dK, dV of the piece we hold, arriving
        for step in range(plan.world):
            src = (plan.rank - step) % plan.world
            kv = _Shift(plan, current, _KV_TAG) if step < plan.world - 1 else None
            part_k = torch.zeros(current[0].shape, dtype=cdt, device=q.device)  # (B, Hkv, Lp, D)
            part_v = torch.zeros(current[1].shape, dtype=cdt, device=q.device)  # (B, Hkv, Lp, Dv)
            block_backward(
                q, current[0], current[1], out, lse, dout, scale=plan.scale,
                q_positions=plan.q_positions, k_positions=plan.k_positions(src, piece),
                causal=plan.causal, window=plan.window, chunk=plan.chunk, delta=delta,
                into=(dq, part_k, part_v), block=plan.block(q, current[0], src, piece),
            )
            if grads is not None:
                before_k, before_v = grads.wait()
                part_k += before_k
                part_v += before_v
            grads = _Shift(plan, [part_k, part_v], _GRAD_TAG)
            del part_k, part_v
            if kv is not None:
                current = kv.wait()
        # After the last step the accumulators are one hop from home: the piece this rank
        # owns arrives with every rank's share added (world >= 2, so grads is set).
        home_k, home_v = grads.wait()  # type: ignore[union-attr]
        k0, k1 = bounds
        dk[:, :, k0:k1] = home_k
        dv[:, :, k0:k1] = home_v
    return dq, dk, dv


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, plan: _Plan) -> Tensor:
        out, lse = _forward(q, k, v, plan)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan = plan
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, out, lse, dout, ctx.plan)
        needs = ctx.needs_input_grad
        return (
            dq.to(q.dtype) if needs[0] else None,
            dk.to(k.dtype) if needs[1] else None,
            dv.to(v.dtype) if needs[2] else None,
            None,
        )


def _scale_bits(scale: float) -> int:
    return struct.unpack("<q", struct.pack("<d", scale))[0]


def _validate(
    q: Any, k: Any, v: Any, causal: Any, window: Any, scale: Any, layout: Any, kv_chunks: Any,
    chunk: Any,
) -> tuple[list[int], float, tuple[int, int] | None]:
    """This rank's values for :data:`_NAMES`, the scale and the window; raises on bad input."""
    b, hq, hkv, lq, lk, d, dk, dv = check_qkv(q, k, v, same_head_dim=True, what=f"{WHAT}: ")
    sizes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if lq == 0 or lk == 0:
        raise ValueError(f"{WHAT}: every rank needs at least one query and one key, got {sizes}")
    if not isinstance(causal, bool):
        raise TypeError(f"{WHAT}: causal must be a bool, got {type(causal).__name__}")
    try:
        window = check_window(window)
    except ValueError as error:
        raise ValueError(f"{WHAT}: {error}") from None
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"{WHAT}: scale must be a finite number or None, got {scale!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"{WHAT}: layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if layout == "zigzag" and (lq % 2 or lk % 2):
        raise ValueError(
            f"{WHAT}: the zigzag layout holds two equal chunks per rank: local lengths must be "
            f"even, got {sizes}"
        )
    for name, value, top in (("kv_chunks", kv_chunks, lk), ("chunk", chunk, None)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{WHAT}: {name} must be a positive integer, got {value!r}")
        if top is not None and value > top:
            raise ValueError(f"{WHAT}: {name}={value} exceeds the local key length {top}")
    grad = torch.is_grad_enabled()
    values = [
        b, hq, lq, d, hkv, lk, dk, dv, dtype_code(q.dtype), int(causal),
        -1 if window is None else window[0], -1 if window is None else window[1],
        _scale_bits(float(scale)), LAYOUTS.index(layout), kv_chunks, chunk,
        int(grad and q.requires_grad), int(grad and k.requires_grad), int(grad and v.requires_grad),
    ]
    return values, float(scale), window


def ring_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    window: tuple[int, int] | None = None,
    scale: float | None = None,
    group: dist.ProcessGroup | None = None,
    layout: str = "contiguous",
    kv_chunks: int = 1,
    chunk: int = DEFAULT_CHUNK,
) -> Tensor:
    """Softmax attention over a sequence split across the ranks of ``group`` (a collective:
    every rank calls it with its own slice).

    The result on each rank is its slice of what :func:`attnkit.attention` returns for the
    gathered sequence (:func:`attnkit.distributed.gather_sequence`), gradients included.

    Args:
        q: ``(B, Hq, Lq, D)`` this rank's queries.
        k: ``(B, Hkv, Lk, D)`` this rank's keys; ``Hkv`` divides ``Hq`` (grouped-query).
        v: ``(B, Hkv, Lk, Dv)`` this rank's values.
        causal: hide later keys. With ``Lq != Lk`` queries align bottom-right on the gathered
            sequence, as in :func:`attnkit.attention`.
        window: ``(left, right)``: the query at position ``p`` sees keys ``p-left .. p+right``.
        scale: multiplies ``q kᵀ``; default ``1/√D``.
        group: the process group (default: the world).
        layout: ``"contiguous"`` (rank ``r`` holds the ``r``-th slice) or ``"zigzag"`` (the
            sequence in ``2P`` chunks, rank ``r`` holding chunks ``r`` and ``2P−1−r``: causal
            work balanced; see :func:`attnkit.distributed.split_sequence`).
        kv_chunks: pieces each rank's key/value block travels in (memory against messages).
        chunk: queries per chunk inside a block (scores in memory: ``chunk × Lk/kv_chunks``).

    Returns:
        ``(B, Hq, Lq, Dv)`` in the input dtype. Queries with no visible key get 0.

    Raises:
        RuntimeError: no initialised process group, or this process is not in ``group``.
        ValueError: a group of one process; on every rank: a rank's input is invalid or the
            ranks' shapes, dtypes or options differ (each rank's values named).
        TypeError: on every rank: non-tensors, non-floating or mixed dtypes.
    """
    group, rank, world = resolve_group(group, WHAT)
    if world < 2:
        raise ValueError(
            f"{WHAT}: the group has one process; ring attention needs at least 2 (use "
            f"attnkit.attention in a single process)"
        )
    problem: BaseException | None = None
    values: list[int] | None = None
    try:
        values, scale_, window_ = _validate(q, k, v, causal, window, scale, layout, kv_chunks,
                                            chunk)
    except (TypeError, ValueError) as error:
        problem = error
    agree(WHAT, _NAMES, values, problem, group, world, rank)
    lq, lk = q.shape[2], k.shape[2]
    offset = bottom_right(world * lq, world * lk)  # of the gathered sequences
    q_positions = sequence_positions(lq, rank=rank, world=world, layout=layout) + offset
    bounds = [lk * i // kv_chunks for i in range(kv_chunks + 1)]
    plan = _Plan(
        group=group, rank=rank, world=world, scale=scale_, causal=causal, window=window_,
        layout=layout, pieces=tuple(itertools.pairwise(bounds)), chunk=chunk,
        q_positions=q_positions, kv_len=lk,
    )
    return _RingAttention.apply(q, k, v, plan)
