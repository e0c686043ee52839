"""Progress of a training run: a ``tqdm`` bar on a terminal, plain lines in CI logs.

The bar (on stderr) shows the loss, the learning rate and tokens/s. It is off when stderr is
not a terminal or ``CI`` is set; then a short line is printed every ``log_every`` updates so a
CI log still shows the run moving. Only the main process reports (see ``ranks.py``).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def bar_wanted(stream: TextIO) -> bool:
    """Whether to draw a bar on ``stream``: it is a terminal and ``CI`` is not set."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not _in_ci()


class Progress:
    """Shows training progress and summarises each window of ``log_every`` updates.

    Args:
        total: the number of updates the run will make, if known.
        initial: updates already made (a resumed run).
        log_every: window length, in updates.
        clock: seconds, monotonic (injected by tests).
        stream: where to write (default ``sys.stderr``).
        enabled: whether this process reports at all (``False`` on non-main ranks).
    """

    def __init__(
        self,
        *,
        total: int | None,
        initial: int,
        log_every: int,
        clock: Callable[[], float],
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.log_every = log_every
        self.clock = clock
        self.enabled = enabled
        self.total = total
        use_bar = enabled and bar_wanted(self.stream)
        self.bar = tqdm(
            total=total, initial=initial, file=self.stream, disable=not use_bar, unit="step",
            dynamic_ncols=True, desc="train",
        )
        self.lines = enabled and not use_bar
        self._reset_window()

    def _reset_window(self) -> None:
        self._loss_sum = 0.0
        self._weight = 0
        self._tokens = 0
        self._updates = 0
        self._extra: dict[str, float] = {}
        self._start = self.clock()

    def step(
        self, *, step: int, epoch: int, loss: float, tokens: int, lr: float,
        extra: dict[str, float] | None = None,
    ) -> dict[str, Any] | None:
        """Record update ``step``; every ``log_every`` updates return the window's summary
        ``{"step", "epoch", "split": "train", "loss", "lr", "tokens_per_second", ...extra}``
        (loss weighted by tokens), else ``None``."""
        weight = max(tokens, 1)
        self._loss_sum += loss * weight
        self._weight += weight
        self._tokens += tokens
        self._updates += 1
        for key, value in (extra or {}).items():
            self._extra[key] = self._extra.get(key, 0.0) + float(value)
        elapsed = self.clock() - self._start
        rate = self._tokens / elapsed if elapsed > 0 else math.nan
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{rate:.0f}", refresh=False)
        if step % self.log_every:
            return None
        record: dict[str, Any] = {
            "step": step,
            "epoch": epoch,
            "split": "train",
            "loss": self._loss_sum / self._weight,
            "lr": lr,
            "tokens_per_second": rate if math.isfinite(rate) else None,
        }
        record.update({key: value / self._updates for key, value in self._extra.items()})
        if self.lines:
            total = f"/{self.total}" if self.total else ""
            rate_text = f"{rate:.0f}" if math.isfinite(rate) else "-"
            self.write(
                f"step {step}{total} epoch {epoch} loss {record['loss']:.4f} lr {lr:.3e} "
                f"tok/s {rate_text}"
            )
        self._reset_window()
        return record

    def write(self, message: str) -> None:
        """Print a line without breaking the bar (nothing on non-main processes)."""
        if not self.enabled:
            return
        if self.lines:
            print(message, file=self.stream, flush=True)
        else:
            self.bar.write(message, file=self.stream)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()
