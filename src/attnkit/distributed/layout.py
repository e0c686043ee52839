"""Which positions of a sequence each rank holds, and splitting/gathering a sequence.

Two layouts of a sequence of ``N`` positions over ``P`` ranks:

``"contiguous"``
    rank ``r`` holds positions ``[r·N/P, (r+1)·N/P)``. Under a causal mask the last rank
    has ``P`` blocks of work and the first only one.
``"zigzag"``
    the sequence is cut into ``2P`` chunks and rank ``r`` holds chunks ``r`` and
    ``2P−1−r``: every rank gets one early and one late chunk, so causal work is balanced
    (the zig-zag split of ring-flash-attention and of Llama 3's context parallelism).

Tensors are split along ``dim`` (the length axis: 2 for ``(B, H, L, D)``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from attnkit.distributed.group import agree, collective_device, dtype_code, resolve_group

LAYOUTS = ("contiguous", "zigzag")
_MAX_DIMS = 8


def check_layout(layout: object) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`; else ``ValueError``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    return layout  # type: ignore[return-value]


def _check_rank(rank: object, world: object) -> tuple[int, int]:
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be a positive integer, got {world!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
        raise ValueError(f"rank must be an integer in [0, {world}), got {rank!r}")
    return rank, world


def sequence_positions(
    local_length: int, *, rank: int, world: int, layout: str = "contiguous"
) -> Tensor:
    """The global positions ``(local_length,)`` int64, ascending, that ``rank`` holds when each
    of the ``world`` ranks holds ``local_length`` positions of one sequence.

    Raises:
        ValueError: a bad rank/world/layout, or an odd ``local_length`` for ``"zigzag"``.
    """
    rank, world = _check_rank(rank, world)
    layout = check_layout(layout)
    if isinstance(local_length, bool) or not isinstance(local_length, int) or local_length < 0:
        raise ValueError(f"local_length must be an integer ≥ 0, got {local_length!r}")
    if layout == "contiguous":
        return torch.arange(rank * local_length, (rank + 1) * local_length)
    if local_length % 2:
        raise ValueError(
            f"the zigzag layout gives each rank two equal chunks: local_length must be even, "
            f"got {local_length}"
        )
    half = local_length // 2
    early = torch.arange(rank * half, (rank + 1) * half)
    late = torch.arange((2 * world - 1 - rank) * half, (2 * world - rank) * half)
    return torch.cat([early, late])


def split_sequence(
    x: Tensor, *, rank: int, world: int, layout: str = "contiguous", dim: int = 2
) -> Tensor:
    """The part of the full sequence ``x`` that ``rank`` holds (see the module docstring).

    Args:
        x: any tensor whose ``dim`` axis is the sequence (``N`` positions).
        rank, world: this rank and the number of ranks.
        layout: ``"contiguous"`` or ``"zigzag"``.
        dim: the sequence axis.

    Returns:
        ``x`` with ``N / world`` positions along ``dim`` (a view for ``"contiguous"``).

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: ``N`` not divisible by ``world`` (``2·world`` for zigzag), bad arguments.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    rank, world = _check_rank(rank, world)
    layout = check_layout(layout)
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim {dim} is out of range for x of shape {tuple(x.shape)}")
    n = x.shape[dim]
    parts = world if layout == "contiguous" else 2 * world
    if n % parts:
        raise ValueError(
            f"the sequence axis (dim {dim}) of x {tuple(x.shape)} has {n} positions, not "
            f"divisible into {parts} equal parts ({layout} layout over {world} ranks)"
        )
    size = n // parts
    if layout == "contiguous":
        return x.narrow(dim, rank * size, size)
    early = x.narrow(dim, rank * size, size)
    late = x.narrow(dim, (2 * world - 1 - rank) * size, size)
    return torch.cat([early, late], dim=dim)


def gather_sequence(
    local: Tensor, *, layout: str = "contiguous", group: dist.ProcessGroup | None = None,
    dim: int = 2,
) -> Tensor:
    """The full sequence from every rank's part (the inverse of :func:`split_sequence`), on
    every rank. A collective: every rank of ``group`` must call it. No gradient flows back.

    Raises:
        RuntimeError: no initialised process group.
        TypeError, ValueError: a bad argument or parts of different shapes, on every rank.
    """
    what = "gather_sequence"
    group, rank, world = resolve_group(group, what)
    names = ["dtype", "dims", *(f"size[{i}]" for i in range(_MAX_DIMS))]
    problem: BaseException | None = None
    values: list[int] | None = None
    try:
        if not isinstance(local, Tensor):
            raise TypeError(f"{what}: local must be a tensor, got {type(local).__name__}")
        layout = check_layout(layout)
        if not 1 <= local.dim() <= _MAX_DIMS or not -local.dim() <= dim < local.dim():
            raise ValueError(
                f"{what}: need 1 to {_MAX_DIMS} dims and dim in range, got {tuple(local.shape)} "
                f"and dim {dim}"
            )
        if layout == "zigzag" and local.shape[dim] % 2:
            raise ValueError(f"{what}: zigzag parts have an even length, got {local.shape[dim]}")
        sizes = list(local.shape) + [-1] * (_MAX_DIMS - local.dim())
        values = [dtype_code(local.dtype), local.dim(), *sizes]
    except (TypeError, ValueError) as error:
        problem = error
    agree(what, names, values, problem, group, world, rank)
    device = collective_device(group)
    parts = [torch.empty_like(local, device=device) for _ in range(world)]
    dist.all_gather(parts, local.contiguous().to(device), group=group)
    parts = [p.to(local.device) for p in parts]
    if layout == "contiguous":
        return torch.cat(parts, dim=dim)
    half = local.shape[dim] // 2
    early = [p.narrow(dim, 0, half) for p in parts]
    late = [p.narrow(dim, half, half) for p in reversed(parts)]
    return torch.cat(early + late, dim=dim)
