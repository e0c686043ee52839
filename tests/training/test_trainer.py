"""The Trainer on tiny tasks: learning, exact resume, budgets, best checkpoint, divergence."""

from __future__ import annotations

import io
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from attnkit.training import (
    CheckpointError,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    load_checkpoint,
)
from tests.training._tiny import (
    MLP,
    CopyConfig,
    CopyModel,
    CopyTask,
    FakeClock,
    MLPConfig,
    RegressionTask,
)


def _mlp(seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(MLPConfig())


def test_copy_task_learns_and_saves_best(tmp_path: Path) -> None:
    vocab = {str(i): i for i in range(8)}
    tokenizer_json = Tokenizer(WordLevel(vocab, unk_token="0")).to_str()
    task = CopyTask(tokenizer_json=tokenizer_json)
    model = CopyModel(CopyConfig())
    config = TrainConfig(lr=0.05, warmup_steps=4, epochs=12, log_every=4, eval_every=16)
    result = Trainer(model, task, config, run_dir=tmp_path, stream=io.StringIO()).fit()
    train = [h["loss"] for h in result.history if h["split"] == "train"]
    assert result.steps == 12 * 4 and result.epochs == 12 and result.stop_reason == "epochs"
    assert train[-1] < 0.5 * train[0]
    chance = 1 / 7
    assert result.final_metrics["accuracy"] > 0.9 > 3 * chance
    assert result.best_metric == max(h["accuracy"] for h in result.history if h["split"] == "valid")
    best = load_checkpoint(result.best_checkpoint)
    assert best.trainer_state["step"] == result.best_step
    assert best.tokenizer_json == tokenizer_json
    assert best.task_config == {"vocab": 8}
    assert load_checkpoint(tmp_path).trainer_state["step"] == result.steps


def test_learning_rate_follows_the_schedule(tmp_path: Path) -> None:
    config = TrainConfig(lr=0.01, warmup_steps=3, decay_steps=10, min_lr_ratio=0.2, max_steps=12,
                         log_every=1)
    result = Trainer(_mlp(0), RegressionTask(), config, stream=io.StringIO()).fit()
    lrs = {h["step"]: h["lr"] for h in result.history if h["split"] == "train"}
    for t in range(1, 13):
        if t <= 3:
            want = 0.01 * t / 3
        elif t <= 10:
            want = 0.01 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * (t - 3) / 7)))
        else:
            want = 0.01 * 0.2
        assert lrs[t] == pytest.approx(want, rel=1e-12), t


def test_resume_reaches_the_same_weights_as_a_straight_run(tmp_path: Path) -> None:
    common = {"lr": 0.02, "warmup_steps": 3, "decay_steps": 20, "eval_every": 4,
              "log_every": 5, "seed": 7}
    # 48 examples in batches of 8: 6 updates per epoch, so step 10 stops mid-epoch.
    straight_model = _mlp(1)
    straight = Trainer(straight_model, RegressionTask(), TrainConfig(max_steps=20, **common),
                       run_dir=tmp_path / "straight", stream=io.StringIO()).fit()

    stopped = Trainer(_mlp(1), RegressionTask(), TrainConfig(max_steps=10, **common),
                      run_dir=tmp_path / "resumed", stream=io.StringIO()).fit()
    assert stopped.steps == 10 and stopped.stop_reason == "max_steps"
    torch.manual_seed(12345)  # whatever the global RNG holds now must not matter
    resumed_model = _mlp(99)  # different initial weights: the checkpoint must replace them
    task = RegressionTask()
    resumed = Trainer(resumed_model, task, TrainConfig(max_steps=20, **common),
                      run_dir=tmp_path / "resumed", stream=io.StringIO()).fit(resume=True)

    assert resumed.resumed_from == stopped.last_checkpoint
    assert resumed.steps == 20 and task.steps_taken == 10
    for name, tensor in straight_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name
    assert resumed.final_metrics == straight.final_metrics
    a = load_checkpoint(straight.last_checkpoint).training_state()
    b = load_checkpoint(resumed.last_checkpoint).training_state()
    assert a["scheduler"] == b["scheduler"]
    for index, entry in a["optimizer"]["state"].items():
        for key, value in entry.items():
            assert torch.equal(b["optimizer"]["state"][index][key], value)


def test_time_budget_stops_then_evaluates_and_checkpoints(tmp_path: Path) -> None:
    clock = FakeClock()
    task = RegressionTask()
    real_loss = task.loss

    def slow_loss(model, batch):
        clock.now += 10.0  # every update takes ten (fake) seconds
        return real_loss(model, batch)

    task.loss = slow_loss
    config = TrainConfig(minutes=0.5, epochs=100, log_every=1)
    result = Trainer(_mlp(0), task, config, run_dir=tmp_path, clock=clock,
                     stream=io.StringIO()).fit()
    assert result.stop_reason == "time"
    assert result.steps == 3 and result.seconds == 30.0
    assert result.history[-1]["split"] == "valid" and result.history[-1]["step"] == 3
    assert load_checkpoint(tmp_path / "last").trainer_state["step"] == 3


def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    task = RegressionTask()
    real_loss = task.loss

    def poisoned(model, batch):
        step = real_loss(model, batch)
        if task.steps_taken == 7:
            step.loss = step.loss * float("nan")
        return step

    task.loss = poisoned
    model = _mlp(0)
    config = TrainConfig(epochs=3, eval_every=5)
    with pytest.raises(TrainingDiverged, match=r"at step 7 \(epoch 1, batch 1\): the loss is nan") \
            as info:
        Trainer(model, task, config, run_dir=tmp_path, stream=io.StringIO()).fit()
    last = load_checkpoint(tmp_path / "last")
    assert last.trainer_state["step"] == 6  # the end of epoch 0 was the last evaluation
    assert info.value.step == 7 and info.value.last_checkpoint == last.path
    assert str(last.path) in str(info.value)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad update not applied
    try:
        Trainer(_mlp(0), task, config, run_dir=tmp_path, stream=io.StringIO()).fit(resume=True)
    except TrainingDiverged as error:  # task.steps_taken is past 7 now: it must not raise
        raise AssertionError("resume hit the poisoned step again") from error


def test_best_checkpoint_follows_the_metric(tmp_path: Path) -> None:
    task = RegressionTask()
    scores = iter([3.0, 1.0, 2.0, 5.0])
    task.evaluate = lambda model: {"mse": next(scores)}
    result = Trainer(_mlp(0), task, TrainConfig(max_steps=8, eval_every=2),
                     run_dir=tmp_path, stream=io.StringIO()).fit()
    assert result.best_metric == 1.0 and result.best_step == 4
    assert load_checkpoint(tmp_path / "best").trainer_state["step"] == 4
    assert load_checkpoint(tmp_path / "last").trainer_state["step"] == 8
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step-00000004", "step-00000008"]


def test_refuses_to_overwrite_or_resume_with_other_settings(tmp_path: Path) -> None:
    Trainer(_mlp(0), RegressionTask(), TrainConfig(max_steps=2), run_dir=tmp_path,
            stream=io.StringIO()).fit()
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(_mlp(0), RegressionTask(), TrainConfig(max_steps=2), run_dir=tmp_path).fit()
    with pytest.raises(ValueError, match=r"lr: checkpoint 0\.001, config 0\.002"):
        Trainer(_mlp(0), RegressionTask(), TrainConfig(lr=0.002, max_steps=4), run_dir=tmp_path,
                stream=io.StringIO()).fit(resume=True)
    with pytest.raises(CheckpointError, match="hidden: checkpoint 16, model 8"):
        Trainer(MLP(MLPConfig(hidden=8)), RegressionTask(), TrainConfig(max_steps=4),
                run_dir=tmp_path, stream=io.StringIO()).fit(resume=True)


def test_ci_log_prints_a_line_every_n_steps(monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    stream = io.StringIO()
    stream.isatty = lambda: True  # a terminal, but CI is set: no bar
    Trainer(_mlp(0), RegressionTask(), TrainConfig(max_steps=6, log_every=2),
            stream=stream).fit()
    lines = [line for line in stream.getvalue().splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["2/6", "4/6", "6/6"]
    assert all(" loss " in line and " lr " in line and " tok/s " in line for line in lines)
    assert "\r" not in stream.getvalue()


def test_resume_without_a_checkpoint_starts_fresh(tmp_path: Path) -> None:
    result = Trainer(_mlp(0), RegressionTask(), TrainConfig(max_steps=2), run_dir=tmp_path,
                     stream=io.StringIO()).fit(resume=True)
    assert result.resumed_from is None and result.steps == 2
    with pytest.raises(ValueError, match="needs a run_dir"):
        Trainer(_mlp(0), RegressionTask(), TrainConfig(max_steps=2)).fit(resume=True)


def test_bad_tasks_are_named() -> None:
    with pytest.raises(TypeError, match=r"missing \[.*'evaluate'"):
        Trainer(_mlp(0), object(), TrainConfig(epochs=1))
    task = RegressionTask()
    task.evaluate = lambda model: {"loss": 1.0}
    with pytest.raises(ValueError, match=r"returned \['loss'\], without task.metric='mse'"):
        Trainer(_mlp(0), task, TrainConfig(max_steps=1), stream=io.StringIO()).fit()
    streaming = RegressionTask()
    streaming.train_batches = lambda epoch, generator: iter([])
    with pytest.raises(ValueError, match=r"set TrainConfig\.decay_steps or minutes"):
        Trainer(_mlp(0), streaming, TrainConfig(epochs=1), stream=io.StringIO()).fit()
    for config in (TrainConfig(minutes=1.0), TrainConfig(minutes=1.0, decay_steps=5)):
        with pytest.raises(ValueError, match=r"train_batches\(epoch=0\) yielded no batches"):
            Trainer(_mlp(0), streaming, config, stream=io.StringIO()).fit()
    task = RegressionTask()
    task.loss = lambda model, batch: 1.0
    with pytest.raises(TypeError, match="must return a StepLoss, got float at step 1"):
        Trainer(_mlp(0), task, TrainConfig(max_steps=1), stream=io.StringIO()).fit()


def _timed(task: RegressionTask, clock: FakeClock, seconds: float) -> RegressionTask:
    real_loss = task.loss

    def slow_loss(model, batch):
        clock.now += seconds  # every update takes this long (fake seconds)
        return real_loss(model, batch)

    task.loss = slow_loss
    return task


def test_a_time_budget_decays_the_learning_rate_as_a_step_budget_does() -> None:
    # 12 updates of 10 s each: minutes=2 must give the schedule of max_steps=12, by the
    # warm-up + cosine formula written out here (test_learning_rate_follows_the_schedule).
    runs = {}
    for name, budget in (("time", {"minutes": 2.0}), ("steps", {"max_steps": 12})):
        clock = FakeClock()
        config = TrainConfig(lr=0.01, warmup_steps=3, min_lr_ratio=0.2, log_every=1, **budget)
        task = _timed(RegressionTask(), clock, 10.0)
        result = Trainer(_mlp(0), task, config, clock=clock, stream=io.StringIO()).fit()
        runs[name] = {h["step"]: h["lr"] for h in result.history if h["split"] == "train"}
        assert result.steps == 12
    for t in range(1, 13):
        want = 0.01 * t / 3 if t <= 3 else 0.01 * (
            0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * (t - 3) / 9))
        )
        assert runs["time"][t] == pytest.approx(want, rel=1e-9), t
        assert runs["steps"][t] == pytest.approx(want, rel=1e-12), t
    assert runs["time"][12] == pytest.approx(0.01 * 0.2)


def test_a_time_budget_counts_the_time_before_a_resume(tmp_path: Path) -> None:
    clock = FakeClock()
    config = TrainConfig(lr=0.01, warmup_steps=2, minutes=1.0, eval_every=3, log_every=1)
    first = Trainer(_mlp(0), _timed(RegressionTask(), clock, 10.0), TrainConfig(
        lr=0.01, warmup_steps=2, minutes=1.0, max_steps=3, eval_every=3, log_every=1),
        run_dir=tmp_path, clock=clock, stream=io.StringIO()).fit()
    assert first.steps == 3
    resumed = Trainer(_mlp(0), _timed(RegressionTask(), clock, 10.0), config, run_dir=tmp_path,
                      clock=clock, stream=io.StringIO()).fit(resume=True)
    assert resumed.steps == 6 and resumed.stop_reason == "time"  # 30 s before + 30 s now
    # "trained 6 steps in 1.0 min": the time is the run's as the steps are (it was 0.5 min)
    assert resumed.seconds == 60.0


def test_a_real_sigint_saves_a_checkpoint_that_resumes_to_the_straight_run(
    tmp_path: Path,
) -> None:
    common = {"lr": 0.02, "warmup_steps": 3, "max_steps": 16, "log_every": 4, "seed": 3}
    straight_model = _mlp(1)
    Trainer(straight_model, RegressionTask(), TrainConfig(eval_every=8, **common),
            run_dir=tmp_path / "straight", stream=io.StringIO()).fit()

    task = RegressionTask()
    real_loss = task.loss

    def interrupted_loss(model, batch):
        if task.steps_taken == 4:  # during update 5, before any evaluation
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(model, batch)

    task.loss = interrupted_loss
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="SIGINT at step 5") as stopped:
        Trainer(_mlp(1), task, TrainConfig(eval_every=8, **common), run_dir=tmp_path / "run",
                stream=io.StringIO()).fit()
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    assert stopped.value.step == 5 and stopped.value.checkpoint == tmp_path / "run" / (
        "checkpoints/step-00000005")
    assert load_checkpoint(tmp_path / "run").trainer_state["step"] == 5
    assert not (tmp_path / "run" / "best").exists()  # nothing was evaluated yet

    resumed_model = _mlp(99)
    result = Trainer(resumed_model, RegressionTask(), TrainConfig(eval_every=8, **common),
                     run_dir=tmp_path / "run", stream=io.StringIO()).fit(resume=True)
    assert result.steps == 16 and result.resumed_from == stopped.value.checkpoint
    for name, tensor in straight_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name


def test_the_header_says_data_model_threads_budget_and_checkpoints(tmp_path: Path) -> None:
    task = RegressionTask()
    task.description = "48 random regression examples"
    stream = io.StringIO()
    Trainer(_mlp(0), task, TrainConfig(max_steps=2, minutes=5.0), run_dir=tmp_path,
            stream=stream).fit()
    head = stream.getvalue().splitlines()[:5]
    assert head[0] == "data:        48 random regression examples"
    assert head[1].startswith("model:       MLP, 114 parameters, on cpu")
    assert head[2].startswith(f"threads:     {torch.get_num_threads()} (")
    assert head[3].startswith("budget:      2 updates or 5 min, whichever comes first;")
    assert head[4].startswith(f"checkpoints: {tmp_path}/")


def test_an_explicit_decay_steps_is_not_moved_by_the_time_budget() -> None:
    clock = FakeClock()
    config = TrainConfig(lr=0.01, warmup_steps=3, decay_steps=100, min_lr_ratio=0.2,
                         minutes=2.0, log_every=1)
    task = _timed(RegressionTask(), clock, 10.0)
    result = Trainer(_mlp(0), task, config, clock=clock, stream=io.StringIO()).fit()
    lrs = {h["step"]: h["lr"] for h in result.history if h["split"] == "train"}
    assert result.steps == 12 and result.stop_reason == "time"
    want = 0.01 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * (12 - 3) / 97)))
    assert lrs[12] == pytest.approx(want, rel=1e-12)  # far from the floor: steps decide
