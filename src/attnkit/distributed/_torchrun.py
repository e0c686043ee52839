"""``python -m attnkit.distributed._torchrun ARGS``: torchrun, minus its report of a failure.

When a worker fails, torchrun's launcher prints a ``ChildFailedError`` traceback of its own
after the worker has already said what went wrong in one line. This runs the same launcher
(``torch.distributed.run``) and turns that error into the failed worker's exit status: 2
stays 2 (bad input), as on one process.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run


def main(argv: list[str]) -> int:
    """Run torchrun with ``argv``; return 0, or the first failed worker's exit status."""
    try:
        run(parse_args(argv))
    except ChildFailedError as error:
        codes = [failure.exitcode for failure in error.failures.values()]
        return next((code for code in codes if code and code > 0), 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
