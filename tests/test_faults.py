"""Faults for real: a training process killed with SIGKILL mid-run, then resumed, ends with the
same weights as a run that was never killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from attnkit.training import load_checkpoint

TRAIN = [
    "train",
    "translate",
    "--data",
    "num2words:de-en:max=199,valid=0.1,test=0.1",
    "--max-steps",
    "60",
    "--eval-every",
    "10",
    "--hidden-dim",
    "16",
    "--embed-dim",
    "8",
    "--batch-size",
    "8",
    "--seed",
    "3",
]


def attnkit(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true"}
    return subprocess.Popen(
        [sys.executable, "-m", "attnkit", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_checkpoint(
    run: Path, step: int, process: subprocess.Popen, timeout: float = 120
) -> None:
    name = f"step-{step:08d}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "checkpoints" / name / "manifest.json").exists():
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended before {name}: {process.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError(f"no {name} after {timeout} s")


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    process = attnkit(*TRAIN, "--out", str(killed))
    wait_for_checkpoint(killed, 20, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert load_checkpoint(killed).trainer_state["step"] < 60  # stopped mid-run

    resumed = attnkit(*TRAIN, "--out", str(killed), "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "resuming" in output
    uninterrupted = attnkit(*TRAIN, "--out", str(straight))
    output, _ = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, output

    a = load_checkpoint(killed / "last")
    b = load_checkpoint(straight / "last")
    assert a.trainer_state["step"] == b.trainer_state["step"] == 60
    wa, wb = a.state_dict(), b.state_dict()
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[name], wb[name]) for name in wa)
    assert not list(killed.glob("checkpoints/.tmp-*"))  # no half-written checkpoint left
