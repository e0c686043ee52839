"""``attnkit train TASK ... --nproc N``: the same command line, re-launched under torchrun.

:func:`handle_nproc` is called by :func:`attnkit.cli.run` on every command line. For a
``train`` command with ``--nproc N`` (``N > 1``) in a process that torchrun did not start, it
runs::

    python -m attnkit.distributed._torchrun --standalone --nproc-per-node N -m attnkit train ...

(torchrun without its own traceback when a worker fails; the command line without
``--nproc``) and returns the failed worker's exit status; each worker then trains
data-parallel (:mod:`attnkit.training.parallel`). torchrun tears every worker down when one
fails. Plain ``torchrun ... -m attnkit train ...`` works the same way on several machines.
In a worker, ``--nproc`` is dropped and ranks other than 0 print nothing on stdout.

The workers share the machine's cores: unless ``OMP_NUM_THREADS`` is set, each gets
``cores // N`` threads (so torchrun has nothing to warn about). Ctrl-C reaches the workers,
which save a checkpoint and stop; the launching process waits for them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence

from attnkit import _threads

OPTION = "--nproc"
NPROC_ENV = "ATTNKIT_NPROC"  # the --nproc a worker was launched with (for its resume command)


def is_torchrun_worker() -> bool:
    """Whether torchrun (or another launcher setting ``RANK`` and ``WORLD_SIZE``) started us."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _is_train(argv: Sequence[str]) -> bool:
    words = [a for a in argv if not a.startswith("-")]
    return bool(words) and words[0] == "train"


def split_nproc(argv: Sequence[str]) -> tuple[list[str], int | None]:
    """``(argv without --nproc, N)``; ``N`` is ``None`` when ``--nproc`` is absent or the
    command is not ``train`` (then ``argv`` is returned unchanged).

    Raises:
        ValueError: ``--nproc`` without a value, given twice, or not a positive integer.
    """
    argv = list(argv)
    if not _is_train(argv):
        return argv, None
    rest: list[str] = []
    values: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg == OPTION:
            if i + 1 >= len(argv):
                raise ValueError(f"{OPTION} needs a value: the number of processes")
            values.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith(OPTION + "="):
            values.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    if not values:
        return rest, None
    if len(values) > 1:
        raise ValueError(f"{OPTION} given {len(values)} times ({values})")
    try:
        n = int(values[0])
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{OPTION} must be a positive integer (processes), got {values[0]!r}")
    return rest, n


def torchrun_command(argv: Sequence[str], nproc: int) -> list[str]:
    """The command that runs ``attnkit argv`` on ``nproc`` local processes under torchrun."""
    return [
        sys.executable, "-m", "attnkit.distributed._torchrun", "--standalone",
        "--nproc-per-node", str(nproc), "-m", "attnkit", *argv,
    ]


def handle_nproc(argv: Sequence[str]) -> tuple[list[str], int | None]:
    """What :func:`attnkit.cli.run` does with ``--nproc``: ``(argv to run here, None)`` or,
    when the command was re-launched under torchrun, ``(argv, its exit status)``.

    Raises:
        ValueError: a bad ``--nproc`` (see :func:`split_nproc`).
    """
    rest, nproc = split_nproc(argv)
    if nproc is None or nproc == 1 or is_torchrun_worker():
        return rest, None
    env = dict(os.environ, **{NPROC_ENV: str(nproc)})
    _threads.choose_for_workers(nproc, env)
    process = subprocess.Popen(torchrun_command(rest, nproc), env=env)
    # Ctrl-C reaches the whole process group: the workers save and stop; this process only
    # waits for them, whatever signal comes.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return rest, process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def quiet_unless_rank0() -> Iterator[None]:
    """In a torchrun worker of rank > 0, send stdout to the null device (rank 0 reports);
    elsewhere do nothing. Errors still reach stderr on every rank."""
    if not is_torchrun_worker() or os.environ.get("RANK", "0") == "0":
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield
