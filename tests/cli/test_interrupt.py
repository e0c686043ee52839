"""Ctrl-C and SIGTERM during ``attnkit train``: a checkpoint, one line with the command that
resumes, status 130; ``--resume`` and ``--out`` checked before any data is loaded."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnkit.cli import run
from attnkit.training import load_checkpoint

TINY = ["train", "translate", "--data", "num2words:de-en:max=99", "--hidden-dim", "8",
        "--embed-dim", "8", "--eval-every", "100000"]


def _interrupted(argv: list[str], sig: signal.Signals, err: Path) -> list[str]:
    """Run ``attnkit argv`` in a subprocess, send ``sig`` half a second after it reports where
    its checkpoints go, check it exits with 130; its stderr lines."""
    with open(err, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "attnkit", *argv], stderr=stderr,
                                   stdout=subprocess.DEVNULL, env={**os.environ, "CI": "1"})
        deadline = time.monotonic() + 120
        while "checkpoints:" not in err.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, err.read_text()
            time.sleep(0.2)
        time.sleep(0.5)
        process.send_signal(sig)
        assert process.wait(timeout=60) == 130
    return err.read_text().splitlines()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_prints_the_resume_command(
    tmp_path: Path, sig: signal.Signals, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = [*TINY, "--max-steps", "1000000", "--out", str(out)]
    # a few updates, no evaluation (the data has 90 pairs, eval at 100,000)
    lines = _interrupted(argv, sig, tmp_path / "stderr.txt")
    last = lines[-1]
    match = re.fullmatch(
        rf"attnkit: {sig.name} at step (\d+); saved (\S+); resume with: (attnkit .*)", last)
    assert match, lines[-3:]
    step = int(match.group(1))
    assert Path(match.group(2)) == out / f"checkpoints/step-{step:08d}"
    assert load_checkpoint(out).trainer_state["step"] == step
    assert not [line for line in lines if line.startswith("attnkit:") and line != last]
    command = shlex.split(match.group(3))
    assert command == ["attnkit", *argv, "--resume"]

    # The printed command continues the run (here for two more updates).
    assert run([*command[1:], "--max-steps", str(step + 2)]) == 0
    assert f"resuming {out}/checkpoints/step-{step:08d} at step {step}" in capsys.readouterr().err
    assert load_checkpoint(out).trainer_state["step"] == step + 2


def test_resume_with_nothing_to_resume_and_a_taken_out_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing"
    assert run([*TINY, "--max-steps", "2", "--out", str(missing), "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"attnkit: error: --resume: {missing} does not exist, so there is nothing to resume; "
        "leave out --resume to start a new run there\n")
    assert not missing.exists()

    out = tmp_path / "run"
    assert run([*TINY, "--max-steps", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert run([*TINY, "--max-steps", "2", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"attnkit: error: --out {out} already holds a run (last checkpoint "
        "checkpoints/step-00000002): add --resume to continue it, or choose another --out\n")


def test_an_interrupted_demo_prints_a_command_that_resumes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`attnkit demo` printed "resume with: attnkit demo --resume" on Ctrl-C, a command that
    did not exist (No such option: --resume), and a plain rerun deletes the saved run."""
    argv = ["demo", "--out", str(tmp_path), "--minutes", "5"]
    last = _interrupted(argv, signal.SIGINT, tmp_path / "stderr.txt")[-1]
    match = re.fullmatch(r"attnkit: SIGINT at step (\d+); saved \S+; resume with: (attnkit .*)",
                         last)
    assert match, last
    step = int(match.group(1))
    command = shlex.split(match.group(2))
    assert command == ["attnkit", *argv, "--resume"]

    # the printed command continues the run (with a budget that is nearly spent already)
    assert run([*command[1:], "--minutes", "0.05"]) == 0
    assert f"at step {step}" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "demo-run").trainer_state["step"] >= step

    assert run(["demo", "--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_resume_with_other_settings_is_refused_naming_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--resume --data num2words:fr-en` on a de-en run said only "a different config ...:
    src_vocab: checkpoint 60, model 102", after loading the data: not which option differed."""
    out = tmp_path / "run"
    assert run([*TINY, "--max-steps", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    other = [a if a != "num2words:de-en:max=99" else "num2words:fr-en:max=99" for a in TINY]
    assert run([*other, "--hidden-dim", "16", "--max-steps", "4", "--out", str(out),
                "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"attnkit: error: --resume: {out} was started with other settings: --data "
        "num2words:fr-en:max=99 (the run has num2words:de-en:max=99), --hidden-dim 16 (the run "
        "has 8); leave those options out (or give the run's values) to continue it, or choose "
        "another --out\n")
    assert load_checkpoint(out).trainer_state["step"] == 2
    assert run([*TINY, "--max-steps", "4", "--out", str(out), "--resume"]) == 0  # same: goes on


def test_sigterm_outside_training_stops_a_command_as_ctrl_c_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import typer

    cleaned = []

    def long_work() -> None:  # a command that is not training (an index, a picture, ...)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal arrives here
            cleaned.append("finished")  # never reached
        finally:
            cleaned.append("cleaned up")

    command = typer.main.get_command(typer.Typer(callback=long_work, invoke_without_command=True))
    before = signal.getsignal(signal.SIGTERM)
    assert run([], command=command) == 130
    assert cleaned == ["cleaned up"]
    assert "attnkit: interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def _saved_run(out: Path, task: dict[str, object], **state: object) -> None:
    """A run folder whose last checkpoint saved ``task`` as its task settings (a stand-in for a
    trained run: the checks below read only the checkpoint's JSON)."""
    import torch

    from attnkit.training import CheckpointExtras, TrainConfig, save_checkpoint

    trainer_state = {"step": 2, "epoch": 0, "seconds": 1.0,
                     "train_config": TrainConfig(max_steps=2, warmup_steps=0).to_dict()}
    save_checkpoint(out, torch.nn.Linear(1, 1), step=2, extras=CheckpointExtras(config=task),
                    trainer_state=trainer_state | state)


def _defaults(settings: type) -> dict[str, object]:
    import dataclasses
    import json

    return json.loads(json.dumps(dataclasses.asdict(settings()), default=str))


@pytest.mark.parametrize(
    ("command", "settings", "given", "said"),
    [
        ("caption", "attnkit.tasks.caption:CaptionSettings", ["--hidden-dim", "7"],
         "--hidden-dim 7 (the run has 256)"),
        ("music", "attnkit.tasks.music:MusicSettings", ["--width", "6"],
         "--width 6 (the run has 128)"),
        ("summarize", "attnkit.tasks.summarize:SummarizeSettings", ["--hidden-dim", "6"],
         "--hidden-dim 6 (the run has 128)"),
        ("speech", "attnkit.tasks.speech:SpeechSettings", ["--n-mels", "8", "--hop-ms", "10"],
         "--hop-ms 10 (the run has 20), --n-mels 8 (the run has 40)"),
    ],
)
def test_every_train_command_refuses_a_resume_with_other_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, settings: str,
    given: list[str], said: str,
) -> None:
    """Only `train translate` compared a resume's options with the run's; the others loaded the
    data and failed on the checkpoint's model config, without naming the option."""
    import importlib

    module, name = settings.split(":")
    task = _defaults(getattr(importlib.import_module(module), name))
    out = tmp_path / "run"
    _saved_run(out, task)
    assert run(["train", command, *given, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnkit: error: --resume: {out} was started with other settings: ")
    assert said in " ".join(err.split()), err


def test_resuming_a_finished_run_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resume of a run whose budget is spent trained 0 steps and exited 0 without a word."""
    out = tmp_path / "run"
    assert run([*TINY, "--max-steps", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert run([*TINY, "--max-steps", "2", "--out", str(out), "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"attnkit: error: {out} already finished (--max-steps 2 reached at step 2); nothing to "
        "resume: raise --max-steps or choose another --out\n")
    assert run([*TINY, "--max-steps", "3", "--out", str(out), "--resume"]) == 0  # budget left
    assert load_checkpoint(out).trainer_state["step"] == 3


@pytest.mark.parametrize(
    ("budget", "said"),
    [
        (["--epochs", "4"], "--epochs 4 reached at epoch 4); nothing to resume: raise --epochs"),
        ([], "--minutes 10 reached after 10.0 min); nothing to resume: raise --minutes"),
    ],
)
def test_resuming_a_run_past_its_epochs_or_time_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], budget: list[str], said: str
) -> None:
    out = tmp_path / "run"
    _saved_run(out, {}, step=40, epoch=4, seconds=600.0, last_eval_step=40,
               final_metrics={"loss": 1.0})
    assert run([*TINY, *budget, "--out", str(out), "--resume"]) == 2
    assert f"{out} already finished ({said}" in capsys.readouterr().err


def test_a_run_stopped_before_its_last_evaluation_is_not_finished(tmp_path: Path) -> None:
    """No final metrics saved (stopped during the last evaluation): resuming completes it."""
    from attnkit.cli.options import check_unfinished
    from attnkit.training import TrainConfig, load_checkpoint

    out = tmp_path / "run"
    _saved_run(out, {}, step=40, epoch=4, seconds=600.0, last_eval_step=20, final_metrics={})
    check_unfinished(load_checkpoint(out), out, TrainConfig(max_steps=40))  # no error
