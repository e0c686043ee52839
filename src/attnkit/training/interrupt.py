"""Ctrl-C and ``kill``: a training run stops after the current update and keeps its work.

While :class:`StopSignals` is active (the Trainer's ``fit()``), the first SIGINT or SIGTERM
only records that a stop was asked for; the Trainer finishes the update in progress, saves a
checkpoint (atomically, like every checkpoint) and raises :class:`TrainingInterrupted`, which
says where the checkpoint is. A second SIGINT, a second or more after the first, interrupts at
once (``KeyboardInterrupt``), for when saving is not wanted; an echo of the first (torchrun
forwards the Ctrl-C its workers also received) is not a second one.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
ECHO_SECONDS = 1.0  # a SIGINT this soon after the first is the same interrupt


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training; the last update was saved first.

    Attributes:
        step: the updates made when training stopped (resumed ones included).
        checkpoint: the checkpoint written for it, or ``None`` without a run folder.
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
    """

    def __init__(
        self, message: str, *, step: int, checkpoint: Path | None, signal_name: str
    ) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint
        self.signal_name = signal_name


class StopSignals:
    """Turn SIGINT/SIGTERM into a request to stop (``requested`` holds the signal number).

    Handlers are installed only in the main thread (Python allows no other) and restored on
    exit; elsewhere this does nothing and the signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._when = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.requested is None:
            self.requested, self._when = number, time.monotonic()
        elif number == signal.SIGINT and time.monotonic() - self._when > ECHO_SECONDS:
            raise KeyboardInterrupt  # asked twice: stop now, without saving

    @property
    def name(self) -> str:
        """The name of the signal received (``""`` before one)."""
        return signal.Signals(self.requested).name if self.requested is not None else ""
