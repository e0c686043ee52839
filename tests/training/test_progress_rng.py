"""Progress output on a terminal and in CI; the per-epoch generator; RNG isolation."""

from __future__ import annotations

import io
import random

import numpy as np
import torch

from attnkit.training import epoch_generator
from attnkit.training.progress import Progress
from attnkit.training.rng import capture_rng_state, preserved_rng, restore_rng_state
from attnkit.training.serialize import join_tensors, split_tensors
from tests.training._tiny import FakeClock


def _tty() -> io.StringIO:
    stream = io.StringIO()
    stream.isatty = lambda: True
    return stream


def _run(progress: Progress, clock: FakeClock, steps: int) -> list:
    records = []
    for step in range(1, steps + 1):
        clock.now += 0.5
        records.append(progress.step(step=step, epoch=0, loss=2.0 / step, tokens=100, lr=1e-3))
    progress.close()
    return records


def test_terminal_gets_a_bar_with_loss_lr_and_rate(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    stream, clock = _tty(), FakeClock()
    records = _run(Progress(total=4, initial=0, log_every=2, clock=clock, stream=stream),
                   clock, 4)
    text = stream.getvalue()
    assert "4/4" in text and "loss=" in text and "lr=" in text and "tok_s=200" in text
    assert "step 2" not in text
    # Windows of two updates: token-weighted mean loss, 100 tokens per 0.5 s.
    assert records[1] == {"step": 2, "epoch": 0, "split": "train", "loss": 1.5, "lr": 1e-3,
                          "tokens_per_second": 200.0}
    assert records[0] is None and records[3]["loss"] == (2 / 3 + 2 / 4) / 2


def test_other_ranks_print_nothing(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    stream, clock = _tty(), FakeClock()
    progress = Progress(total=4, initial=0, log_every=1, clock=clock, stream=stream,
                        enabled=False)
    _run(progress, clock, 4)
    progress.write("hello")
    assert stream.getvalue() == ""


def test_epoch_generator_depends_on_seed_and_epoch_only() -> None:
    def draw(seed: int, epoch: int) -> list[int]:
        return torch.randperm(20, generator=epoch_generator(seed, epoch)).tolist()

    assert draw(3, 2) == draw(3, 2)
    assert len({tuple(draw(s, e)) for s, e in [(0, 0), (0, 1), (1, 0), (1, 1)]}) == 4


def test_rng_state_round_trips_through_json_and_tensors() -> None:
    json_part, tensors = split_tensors(capture_rng_state())
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    restore_rng_state(join_tensors(json_part, tensors))
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    with preserved_rng():
        torch.rand(10), random.random(), np.random.rand()
    after = (random.random(), float(np.random.rand()), float(torch.rand(())))
    restore_rng_state(join_tensors(json_part, tensors))
    random.random(), np.random.rand(), torch.rand(())
    assert after == (random.random(), float(np.random.rand()), float(torch.rand(())))
