"""``python -m attnkit.distributed._torchrun ARGS``: torchrun, minus its own reports.

When a worker fails, torchrun's launcher prints a ``ChildFailedError`` traceback of its own
after the worker has already said what went wrong in one line. This runs the same launcher
(``torch.distributed.run``) and turns that error into the failed worker's exit status: 2
stays 2 (bad input), as on one process. On Ctrl-C the launcher would print warnings and a
``SignalException`` traceback while the workers save a checkpoint and print the command that
resumes it; here it stays quiet and exits with ``128 + signal``, as the workers do.
"""

from __future__ import annotations

import logging
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run


def main(argv: list[str]) -> int:
    """Run torchrun with ``argv``; return 0, the first failed worker's exit status, or
    ``128 + signal`` when the launcher was interrupted (its workers report for it)."""
    for name, logger in logging.root.manager.loggerDict.items():  # each sets its own level
        if name.startswith("torch.distributed.elastic") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.ERROR)
    try:
        run(parse_args(argv))
    except SignalException as stop:
        return 128 + int(stop.sigval)
    except ChildFailedError as error:
        codes = [failure.exitcode for failure in error.failures.values()]
        return next((code for code in codes if code and code > 0), 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
