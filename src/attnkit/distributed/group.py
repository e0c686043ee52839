"""The process group of a collective call, and agreement of every rank on its arguments.

A collective whose ranks disagree (one rank's slice longer than another's, one rank's input
invalid) would hang or fail on one side only. :func:`agree` prevents that with one small
``all_gather``: every rank sends whether its own input was valid and the integers that must
match; every rank then sees the same table and raises the same error, or none does.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
import torch.distributed as dist


def resolve_group(group: dist.ProcessGroup | None, what: str) -> tuple[object, int, int]:
    """``(group, rank in it, its size)``.

    Raises:
        RuntimeError: ``torch.distributed`` is unavailable or not initialised, or this process
            is not a member of ``group``.
    """
    if not dist.is_available():
        raise RuntimeError(f"{what} needs torch.distributed, which this PyTorch build lacks")
    if not dist.is_initialized():
        raise RuntimeError(
            f"{what} needs an initialised torch.distributed process group: call "
            f"torch.distributed.init_process_group(...) first (torchrun sets the environment "
            f"it reads: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE)"
        )
    rank = dist.get_rank(group)
    if rank < 0:
        raise RuntimeError(f"{what}: this process (global rank {dist.get_rank()}) is not in group")
    return group, rank, dist.get_world_size(group)


def dtype_code(dtype: torch.dtype) -> int:
    """A number for ``dtype`` that is the same in every process (for :func:`agree`)."""
    return zlib.crc32(str(dtype).encode("ascii"))


def collective_device(group: object) -> torch.device:
    """Where small tensors for collectives on ``group`` must live (the GPU for NCCL)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(
    what: str,
    names: Sequence[str],
    values: Sequence[int] | None,
    problem: BaseException | None,
    group: object,
    world: int,
    rank: int,
) -> None:
    """Raise the same error on every rank when a rank's input was bad or the ranks' values
    differ; return on every rank otherwise.

    Args:
        what: the calling function, for the messages.
        names: what each value is (the same list on every rank).
        values: this rank's integers, one per name (``None`` when ``problem`` is set).
        problem: this rank's own validation error, or ``None``.

    Raises:
        TypeError, ValueError: this rank's ``problem`` (re-raised), or a ``ValueError`` naming
            the ranks whose input was bad or the values that differ, with each rank's value.
    """
    if problem is None and (values is None or len(values) != len(names)):
        raise RuntimeError(f"{what}: {len(names)} names but values {values!r} (a bug)")
    row = [1, *values] if problem is None and values is not None else [0] * (len(names) + 1)
    local = torch.tensor(row, dtype=torch.int64)
    device = collective_device(group)
    table = [torch.empty_like(local, device=device) for _ in range(world)]
    dist.all_gather(table, local.to(device), group=group)
    rows = [t.cpu().tolist() for t in table]
    bad = [r for r, row in enumerate(rows) if row[0] == 0]
    if bad:
        if problem is not None:
            raise problem
        raise ValueError(
            f"{what}: the input of rank(s) {bad} is invalid (their error says why); every rank "
            f"stops here"
        )
    differ = [
        f"{name}: " + ", ".join(f"rank {r} {row[i + 1]}" for r, row in enumerate(rows))
        for i, name in enumerate(names)
        if len({row[i + 1] for row in rows}) > 1
    ]
    if differ:
        raise ValueError(
            f"{what}: the ranks disagree (rank {rank} of {world} sees this too): "
            + "; ".join(differ)
        )
