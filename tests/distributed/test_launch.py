"""``attnkit train ... --nproc N``: the command line re-launched under torchrun."""

from __future__ import annotations

import os
import sys
from typing import ClassVar

import pytest

from attnkit.cli import run
from attnkit.distributed import launch

TRAIN = ["train", "translate", "--out", "runs/x", "--max-steps", "3"]


def test_split_nproc_strips_the_option() -> None:
    assert launch.split_nproc([*TRAIN, "--nproc", "4"]) == (TRAIN, 4)
    assert launch.split_nproc(["train", "--nproc=2", *TRAIN[1:]]) == (TRAIN, 2)
    assert launch.split_nproc(TRAIN) == (TRAIN, None)
    # Not a train command: left alone (the command itself then rejects an unknown option).
    assert launch.split_nproc(["translate", "run", "--nproc", "2"]) == (
        ["translate", "run", "--nproc", "2"], None)
    for bad, match in (([*TRAIN, "--nproc"], "needs a value"),
                       ([*TRAIN, "--nproc", "0"], "positive integer"),
                       ([*TRAIN, "--nproc", "two"], "positive integer"),
                       ([*TRAIN, "--nproc", "2", "--nproc=3"], "given 2 times")):
        with pytest.raises(ValueError, match=match):
            launch.split_nproc(bad)


class FakeTorchrun:
    """Stands for the torchrun process: records its command line and environment."""

    calls: ClassVar[list[tuple[list[str], dict[str, str]]]] = []

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.calls.append((cmd, env))

    def wait(self) -> int:
        return 7


def test_run_relaunches_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(launch.subprocess, "Popen", FakeTorchrun)
    FakeTorchrun.calls.clear()
    assert run([*TRAIN, "--nproc", "2"]) == 7
    [(cmd, env)] = FakeTorchrun.calls
    assert cmd == [sys.executable, "-m", "attnkit.distributed._torchrun", "--standalone",
                   "--nproc-per-node", "2", "-m", "attnkit", *TRAIN]
    # The workers share the cores (and torchrun has no OMP_NUM_THREADS warning to print).
    assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert env[launch.NPROC_ENV] == "2"


def test_a_worker_runs_the_command_itself(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under torchrun (RANK and WORLD_SIZE set) nothing is re-launched; --nproc is dropped."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: pytest.fail(f"launched {a}"))
    seen: list[list[str]] = []

    class Command:
        def main(self, args, prog_name, standalone_mode):
            seen.append(args)
            print("only rank 0 prints")
            return 0

    assert run([*TRAIN, "--nproc", "2"], command=Command()) == 0
    assert seen == [TRAIN]
    assert capsys.readouterr().out == ""  # rank 1 prints nothing on stdout


def test_a_bad_nproc_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*TRAIN, "--nproc", "0"]) == 2
    assert "--nproc must be a positive integer" in capsys.readouterr().err


def test_two_processes_train_without_torchrun_warnings(tmp_path) -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RANK")}
    proc = subprocess.run(
        [sys.executable, "-m", "attnkit", "train", "translate", "--data",
         "num2words:de-en:max=99", "--hidden-dim", "8", "--embed-dim", "8", "--max-steps", "2",
         "--out", str(tmp_path / "run"), "--nproc", "2"],
        capture_output=True, text=True, timeout=300, env={**env, "CI": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "x 2 processes (data-parallel)" in proc.stderr
    # torchrun warns (W1202 ... "Setting OMP_NUM_THREADS ...") when it picks the threads itself
    assert "OMP_NUM_THREADS environment variable" not in proc.stderr
    assert not [line for line in proc.stderr.splitlines() if line.startswith("W1")]


def test_ctrl_c_on_two_processes_saves_and_prints_one_line(tmp_path) -> None:
    """Ctrl-C reaches the whole process group (the launcher, torchrun, both workers): one
    checkpoint, one line with the command that resumes (with --nproc), status 130."""
    import signal
    import subprocess
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RANK")}
    err = tmp_path / "stderr.txt"
    argv = ["train", "translate", "--data", "num2words:de-en:max=99", "--hidden-dim", "8",
            "--embed-dim", "8", "--max-steps", "1000000", "--eval-every", "1000000",
            "--out", str(tmp_path / "run"), "--nproc", "2"]
    with open(err, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "attnkit", *argv], stderr=stderr,
                                   stdout=subprocess.DEVNULL, env={**env, "CI": "1"},
                                   start_new_session=True)
        deadline = time.monotonic() + 180
        while "checkpoints:" not in err.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, err.read_text()
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert process.wait(timeout=120) == 130
    lines = [line for line in err.read_text().splitlines()
             if not line.startswith(("eval ", "step "))]
    assert lines[-1].startswith("attnkit: SIGINT at step ")
    assert lines[-1].endswith(" --resume --nproc 2")
    assert not [line for line in lines[5:-1]], lines  # after the 5 header lines: only that one
