"""The thread settings of the ``attnkit`` command, chosen before PyTorch starts.

PyTorch's OpenMP threads spin while they wait for each other by default. On a machine whose
cores are busy with other processes that spinning stalls every short parallel operation: a
20-step translation training took 144 s instead of 60 s beside two CPU-bound processes
(docs/benchmarks.md). With ``OMP_WAIT_POLICY=PASSIVE`` a waiting thread sleeps instead, and
the same run does not collapse. The OpenMP runtime reads the variable once, when it loads
(on ``import torch``), so the command sets it first (:mod:`attnkit.__main__`); the training
header says what was chosen (:func:`describe`).

The user's own ``OMP_WAIT_POLICY`` and ``OMP_NUM_THREADS`` always win. ``attnkit bench`` is
left alone: it measures kernels under the environment it is given (``make bench`` picks
the policy from the load). This module imports nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence

WAIT_POLICY = "OMP_WAIT_POLICY"
THREADS = "OMP_NUM_THREADS"
# Which of the two variables the command set itself (torchrun workers inherit it too).
CHOSEN_BY_ATTNKIT = "ATTNKIT_THREADS_CHOSEN"
_LEFT_ALONE = ("bench",)


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def choose(argv: Sequence[str], environ: MutableMapping[str, str] | None = None) -> None:
    """Set attnkit's thread defaults in ``environ`` (default ``os.environ``) for the command
    line ``argv`` (without the program name): ``OMP_WAIT_POLICY=PASSIVE`` unless the user set
    it. Must run before ``import torch`` to take effect."""
    env = os.environ if environ is None else environ
    if _command(argv) in _LEFT_ALONE:
        return
    chosen = [name for name in env.get(CHOSEN_BY_ATTNKIT, "").split(",") if name]
    if WAIT_POLICY not in env:
        env[WAIT_POLICY] = "PASSIVE"
        chosen.append(WAIT_POLICY)
    if chosen:
        env[CHOSEN_BY_ATTNKIT] = ",".join(dict.fromkeys(chosen))


def choose_for_workers(nproc: int, environ: MutableMapping[str, str] | None = None) -> None:
    """Threads per process when ``nproc`` processes share this machine (``--nproc``): the
    cores divided among them, unless the user set ``OMP_NUM_THREADS``."""
    env = os.environ if environ is None else environ
    if THREADS in env:
        return
    env[THREADS] = str(max(1, (os.cpu_count() or 1) // nproc))
    chosen = [name for name in env.get(CHOSEN_BY_ATTNKIT, "").split(",") if name]
    env[CHOSEN_BY_ATTNKIT] = ",".join(dict.fromkeys([*chosen, THREADS]))


def describe() -> str:
    """One line: the threads PyTorch uses, the OpenMP wait policy, who chose them, and how
    to change them."""
    import torch

    env = os.environ
    chosen = env.get(CHOSEN_BY_ATTNKIT, "").split(",")
    threads = torch.get_num_threads()
    if THREADS in chosen:
        who = f"attnkit's share of the {os.cpu_count()} cores"
    elif THREADS in env:
        who = f"your {THREADS}"
    else:
        who = "one per core"
    policy = env.get(WAIT_POLICY)
    if policy is None:
        wait = "OpenMP threads spin while they wait (the runtime's default)"
    elif WAIT_POLICY in chosen:
        wait = f"waiting threads sleep ({WAIT_POLICY}={policy}, attnkit's default)"
    else:
        wait = f"{WAIT_POLICY}={policy} (yours)"
    return f"{threads} ({who}); {wait}; set {THREADS} / {WAIT_POLICY} to change"
