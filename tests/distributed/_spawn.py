"""Run a function on several ``gloo`` processes spawned on this machine, with a deadline.

The processes are forked from a fork server that has torch and attnkit imported (a clean
process, unlike a fork of the test process). Each process gets one thread, joins a process group through a ``file://`` rendezvous in a
fresh temporary folder, runs ``fn(rank, world, *args)`` and leaves the group. An exception in
any process fails the caller with that process's traceback (the others are terminated); a
process still running at the deadline fails it with ``TimeoutError`` — a bug cannot hang the
suite.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

GROUP_TIMEOUT_S = 60


def _entry(rank: int, world: int, init: str, fn: Callable[..., Any], args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=GROUP_TIMEOUT_S),
    )
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


# Imported once by the fork server; every process forked from it starts with them loaded
# (importing torch, and the torch._dynamo that DistributedDataParallel pulls in, costs seconds
# per process on a loaded 2-core machine).
PRELOAD = ["torch", "torch._dynamo", "torch.nn.parallel", "attnkit.distributed",
           "attnkit.training", "tests.distributed._spawn"]


def run_ranks(world: int, fn: Callable[..., Any], *args: Any, timeout: float = 120) -> None:
    """Run ``fn(rank, world, *args)`` on ``world`` processes; raise if any fails or hangs."""
    mp.get_context("forkserver").set_forkserver_preload(PRELOAD)
    with tempfile.TemporaryDirectory(prefix="attnkit-dist-") as folder:
        init = "file://" + os.path.join(folder, "rendezvous")
        context = mp.start_processes(
            _entry, args=(world, init, fn, args), nprocs=world, join=False,
            start_method="forkserver",
        )
        deadline = time.monotonic() + timeout
        try:
            while not context.join(timeout=max(0.1, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{world} processes still running after {timeout} s")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
                    process.join(5)
