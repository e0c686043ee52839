"""The ``attnkit`` command's entry point (also ``python -m attnkit``).

It chooses the thread settings before anything imports PyTorch (:mod:`attnkit._threads`),
then runs :func:`attnkit.cli.run`. Without the ``apps`` extra it says what to install in one
line instead of a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run the ``attnkit`` command line and exit with its status."""
    from attnkit import _threads

    _threads.choose(sys.argv[1:])
    try:
        from attnkit.cli import run
    except ModuleNotFoundError as error:
        from attnkit._extras import missing_extra

        message = missing_extra(error)
        if message is None:
            raise
        print(f"attnkit: error: {message}", file=sys.stderr)
        sys.exit(2)
    sys.exit(run())


if __name__ == "__main__":
    main()
