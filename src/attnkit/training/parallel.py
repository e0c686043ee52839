"""Data-parallel training: what the Trainer does differently when it runs on several processes.

Launch: ``attnkit train TASK ... --nproc N`` (one machine) or ``torchrun ... -m attnkit.cli
train TASK ...`` (several). torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` joins that group (``gloo`` on CPU,
``nccl`` on CUDA) with a timeout, so a rank left waiting for a dead peer fails instead of
hanging (torchrun also tears the other ranks down when one exits with an error).

Random streams: the data order is the same on every rank (below), but each rank draws its own
dropout masks (rank ``r`` is seeded with ``rng.rank_seed(seed, r)``), as one process would for
different rows; checkpoints keep every rank's RNG state so a resume continues each stream.

Per update (:class:`DataParallel`): every rank draws the *same* batch (the data order is a
function of the seed and the epoch only) and keeps its rows (``task.shard(batch, rank,
world)``), so the global batch is one process's batch. The model is wrapped in
``DistributedDataParallel``, which averages the gradients over the ranks; each rank's loss is
first scaled by ``tokens_r · world / tokens_global`` (the token counts all-reduced), so the
averaged gradient is the gradient of the token-mean loss over the whole batch, exactly what a
single process computes. One small all-reduce per step carries the token counts, the losses
and whether each rank's ``task.loss`` succeeded and was finite, so every rank stops together
on an error in any of them.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from attnkit.distributed.launch import is_torchrun_worker
from attnkit.training.task import model_device

TIMEOUT_ENV = "ATTNKIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0  # evaluation runs on rank 0 while the others wait


def torchrun_world() -> int | None:
    """``WORLD_SIZE`` when this process was started by torchrun (``RANK`` and ``WORLD_SIZE``
    set), else ``None``.

    Raises:
        ValueError: the variables are set but are not integers.
    """
    if not is_torchrun_worker():
        return None
    try:
        return int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise ValueError(
            f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}"
        ) from None


def group_timeout() -> datetime.timedelta:
    """How long a collective waits for a missing rank: ``$ATTNKIT_DIST_TIMEOUT`` seconds, default
    30 minutes.

    Raises:
        ValueError: the variable is not a positive number.
    """
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        seconds = DEFAULT_TIMEOUT_S if raw is None else float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def init_from_env(device: torch.device) -> bool:
    """Join torchrun's process group if this is a torchrun worker and no group exists yet.

    Args:
        device: where the model lives; CUDA picks ``nccl`` (and makes that GPU current),
            anything else ``gloo``.

    Returns:
        Whether training is distributed (a process group of 2 or more ranks exists).

    Raises:
        ValueError: bad torchrun variables or timeout.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    world = torchrun_world()
    if world is None or world < 2:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    backend = "gloo"
    if device.type == "cuda":
        backend = "nccl"
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=group_timeout())
    atexit.register(_destroy)
    return True


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Sharding helpers for tasks


class TooFewRows(ValueError):
    """A batch has fewer rows than there are processes (the Trainer then lets rank 0 take the
    whole batch and the others contribute nothing to it)."""


def row_range(rows: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of the rows ``rank`` keeps of ``rows`` (contiguous, sizes differing
    by at most one, as ``numpy.array_split``).

    Raises:
        TooFewRows: fewer rows than ranks (a rank would have nothing to train on).
        ValueError: a bad ``rank``/``world``.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    if rows < world:
        raise TooFewRows(
            f"a batch of {rows} rows cannot be split over {world} processes: every process "
            f"needs at least one row (use a larger batch size or fewer processes)"
        )
    base, extra = divmod(rows, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_rows(batch: Any, rank: int, world: int) -> Any:
    """This rank's rows of ``batch``: a tensor, or a tuple/list/dict/dataclass of them (and of
    other values, kept as they are), all tensors with the same first (row) dimension.

    Raises:
        TooFewRows: fewer rows than ranks.
        ValueError: tensors with different row counts, or no tensor at all.
    """
    rows = {int(t.shape[0]) for t in _tensors(batch) if t.dim() > 0}
    if len(rows) != 1:
        found = sorted(rows) if rows else "no tensor with a row dimension"
        raise ValueError(f"cannot shard a batch whose tensors have row counts {found}")
    start, stop = row_range(rows.pop(), rank, world)
    return _map_rows(batch, start, stop)


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, Mapping):
        return [t for item in value.values() for t in _tensors(item)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in _tensors(getattr(value, f.name))]
    return []


def _map_rows(value: Any, start: int, stop: int) -> Any:
    if isinstance(value, Tensor):
        return value[start:stop] if value.dim() > 0 else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(_map_rows(v, start, stop) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_map_rows(v, start, stop) for v in value)
    if isinstance(value, Mapping):
        return {key: _map_rows(v, start, stop) for key, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _map_rows(getattr(value, f.name), start, stop)
                   for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value


# ---------------------------------------------------------------------------------------------
# The Trainer's side


class RankFailed(RuntimeError):
    """Another rank failed; this one stops too (the other rank's error says why)."""


class DataParallel:
    """The model wrapped in ``DistributedDataParallel``, the task's ``shard`` and the per-step
    agreement of the ranks. Built by the Trainer when a process group of 2+ ranks exists.

    Args:
        model: the model (stays the Trainer's ``model``; checkpoints save it, not the wrapper).
        task: must have ``shard(batch, rank, world) -> batch``.

    Raises:
        ValueError: the task has no ``shard`` method (on every rank alike).
    """

    def __init__(self, model: nn.Module, task: Any) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if not callable(getattr(task, "shard", None)):
            raise ValueError(
                f"task {type(task).__name__} has no shard(batch, rank, world) method, so it "
                f"cannot train on {self.world} processes (--nproc / torchrun): train it in one "
                f"process, or give the task a shard method"
            )
        self.task = task
        self.stop_requested = False  # a rank received SIGINT/SIGTERM (agreed each update)
        device = model_device(model)
        self.device = device if dist.get_backend() == "nccl" else torch.device("cpu")
        self.ddp = DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=True,  # models with branches (no attention, coverage, ...)
        )

    def shard(self, batch: Any) -> tuple[Any, bool]:
        """This rank's part of the global ``batch``, and whether its tokens count.

        A batch with fewer rows than ranks (the short last batch of an epoch) is not split:
        every rank runs all of it (so DDP's collectives stay in step) but only rank 0's loss
        counts; the others' is scaled by 0. The gradient is still exactly one process's.
        """
        try:
            return self.task.shard(batch, self.rank, self.world), True
        except TooFewRows:
            return self.task.shard(batch, 0, 1), self.rank == 0

    def agree_step(
        self,
        loss: float,
        tokens: int,
        problem: BaseException | None,
        step: int,
        seconds: float = 0.0,
        stop: bool = False,
    ) -> tuple[float, int, list[int], float]:
        """All-reduce this rank's loss, token count and state; return the token-mean loss over
        every rank, the global token count, the ranks whose loss is not finite, and the mean
        of the ranks' ``seconds`` (one clock for every rank's budget and schedule).
        :attr:`stop_requested` becomes true when any rank passed ``stop``.

        Raises:
            this rank's ``problem``, or :class:`RankFailed` when another rank's ``task.loss``
            failed (every rank raises: none waits in the backward's all-reduce).
        """
        failed = problem is not None
        finite = not failed and math.isfinite(loss)
        row = torch.zeros(5 + self.world, dtype=torch.float64)
        row[0] = loss * tokens if finite else 0.0
        row[1] = 0 if failed else tokens
        row[2] = float(failed)
        row[3] = seconds / self.world
        row[4] = float(stop)
        row[5 + self.rank] = 0.0 if finite or failed else 1.0
        row = row.to(self.device)
        dist.all_reduce(row)
        row = row.cpu()
        if problem is not None:
            raise problem
        if row[2] > 0:
            raise RankFailed(
                f"{int(row[2])} other process(es) failed in task.loss at step {step}; "
                f"rank {self.rank} stops too (see their error)"
            )
        bad = [r for r in range(self.world) if row[5 + r] > 0]
        total = int(row[1])
        mean = float(row[0]) / total if total > 0 else math.nan
        self.stop_requested = self.stop_requested or bool(row[4] > 0)
        return mean, total, bad, float(row[3])

    def scale(self, loss: Tensor, tokens: int, total: int) -> Tensor:
        """``loss · tokens · world / total``: after DDP's averaging, the gradient of the
        token-mean loss over the global batch.

        Raises:
            ValueError: the global batch has no token.
        """
        if total <= 0:
            raise ValueError("the global batch has no token to train on (tokens sum to 0)")
        return loss * (tokens * self.world / total)

    def broadcast_metrics(
        self, metrics: dict[str, float] | None, error: BaseException | None
    ) -> dict[str, float]:
        """Rank 0's evaluation (or its error) on every rank.

        Raises:
            rank 0's error on rank 0, :class:`RankFailed` on the others.
        """
        message = [None if error is None else f"{type(error).__name__}: {error}", metrics]
        dist.broadcast_object_list(message, src=0, device=self.device)
        if error is not None:
            raise error
        if message[0] is not None:
            raise RankFailed(f"evaluation failed on rank 0 ({message[0]}); rank {self.rank} stops")
        return message[1]  # type: ignore[return-value]

    def gather_objects(self, value: Any) -> list[Any]:
        """``value`` (a small picklable object) of every rank, in rank order, on every rank."""
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        """Wait until every rank gets here (rank 0 has written its checkpoint)."""
        dist.barrier()
