"""The one Trainer: every application trains through ``Trainer(model, task, config).fit()``.

It knows nothing of models or tasks beyond :class:`~attnkit.training.task.TrainTask`. Each
update: ``task.loss`` -> backward -> clip -> AdamW -> schedule. Evaluation runs every
``eval_every`` updates, at the end of each epoch and when a budget stops the run; each
evaluation writes a checkpoint (``last``, and ``best`` when ``task.metric`` improved).

On several processes (torchrun, ``attnkit train ... --nproc N``) it trains data-parallel
(:mod:`attnkit.training.parallel`): each rank takes its rows of the same batch, gradients are
averaged by ``DistributedDataParallel`` so they equal one process's, and only rank 0 evaluates,
logs and writes checkpoints.

It starts by printing a header (data, model size and device, threads, budget and schedule,
checkpoint folder). SIGINT or SIGTERM stops it after the current update with a checkpoint
saved (:mod:`attnkit.training.interrupt`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from attnkit.checks import locate
from attnkit.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from attnkit.training.config import RESUME_FIELDS, TrainConfig
from attnkit.training.header import header_lines
from attnkit.training.interrupt import StopSignals, TrainingInterrupted
from attnkit.training.parallel import DataParallel, init_from_env
from attnkit.training.progress import Progress
from attnkit.training.ranks import is_main_process
from attnkit.training.rng import (
    capture_rng_state,
    epoch_generator,
    preserved_rng,
    rank_seed,
    restore_rng_state,
    seed_everything,
)
from attnkit.training.schedule import build_optimizer, time_budget
from attnkit.training.state import RunState, TrainingDiverged, TrainResult
from attnkit.training.store import RunDir
from attnkit.training.task import StepLoss, TrainTask, check_step_loss, check_task, model_device


class Trainer:
    """Train ``model`` on ``task`` as ``config`` says, checkpointing into ``run_dir``.

    Args:
        model: any ``nn.Module``; it stays on its device (the task moves batches to it).
            If it has a ``config`` (dataclass or mapping) that is saved and checked on load.
        task: implements :class:`~attnkit.training.task.TrainTask`.
        config: a :class:`TrainConfig`.
        run_dir: where checkpoints go (``run_dir/last``, ``run_dir/best``); ``None`` for none.
        clock: monotonic seconds (for budgets and tokens/s; tests inject a fake one).
        stream: where progress goes (default stderr).

    When this process is a torchrun worker (or a process group of 2+ ranks is initialised)
    the Trainer joins the group and trains data-parallel; the task must then have
    ``shard(batch, rank, world)``.

    Raises:
        TypeError: ``model``, ``task`` or ``config`` of the wrong kind.
        ValueError: distributed, but the task has no ``shard`` method.
    """

    def __init__(
        self,
        model: nn.Module,
        task: TrainTask,
        config: TrainConfig,
        *,
        run_dir: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        stream: TextIO | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        check_task(task)
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.model = model
        self.task = task
        self.config = config
        self.run = RunDir(run_dir) if run_dir is not None else None
        self.clock = clock
        self.stream = stream
        device = model_device(model)
        self.parallel = DataParallel(model, task) if init_from_env(device) else None
        self.main = is_main_process()

    # ----------------------------------------------------------------------------- fit
    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train until a budget is spent; evaluate and checkpoint; return a :class:`TrainResult`.

        Args:
            resume: continue from ``run_dir/last`` (same step, optimizer, schedule, RNG and
                data order); starts fresh when the run has no checkpoint yet.

        Raises:
            ValueError: ``run_dir`` already holds a run and ``resume`` is False; ``resume``
                without a ``run_dir``; a resume whose config differs in an optimisation field
                (named); a task returning no batches or bad metrics.
            CheckpointError: the checkpoint to resume is corrupted or does not fit the model.
            TrainingDiverged: the loss or gradient norm became NaN/Inf (the step is named).
            TrainingInterrupted: SIGINT or SIGTERM arrived; the current update was finished
                and saved first (the exception names the checkpoint).
        """
        start = self.clock()
        checkpoint = self._checkpoint_to_resume(resume)
        epoch_length = self._epoch_length()
        state = self._start_state(checkpoint, epoch_length)
        self.optimizer, self.scheduler = build_optimizer(self.model, self.config, state.decay_steps)
        rng_state = self._restore(checkpoint) if checkpoint is not None else None
        self.schedule = self.scheduler.lr_lambdas[0]
        # Budgets may change on resume: the schedule follows this run's time budget.
        self.schedule.budget_seconds = time_budget(self.config)
        self.start, self.now = start, state.seconds
        self.progress = Progress(
            total=self._total_steps(epoch_length), initial=state.step,
            log_every=self.config.log_every, clock=self.clock, stream=self.stream,
            enabled=self.main,
        )
        for line in header_lines(
            model=self.model, description=getattr(self.task, "description", None),
            config=self.config, run_dir=self.run.root if self.run else None,
            decay_steps=state.decay_steps,
            world=self.parallel.world if self.parallel is not None else 1,
        ):
            self.progress.write(line)
        if checkpoint is not None:
            self.progress.write(f"resuming {checkpoint.path} at step {state.step}")
        self.model.train()
        with StopSignals() as self.signals:
            try:
                stop_reason = self._loop(state, rng_state)
                if stop_reason != "interrupted" and (
                    state.last_eval_step != state.step or not state.final_metrics
                ):
                    self._evaluate_and_save(state)
                if stop_reason == "interrupted" or self.signals.requested is not None:
                    raise self._interrupted(state)
            finally:
                self.progress.close()
        if self.parallel is not None:
            self.parallel.barrier()  # rank 0's last checkpoint is on disk for every rank
        return TrainResult(
            steps=state.step,
            epochs=state.epoch,
            tokens=state.tokens,
            seconds=state.seconds + self.clock() - start,
            stop_reason=stop_reason,
            metric=self.task.metric,
            best_metric=state.best_metric,
            best_step=state.best_step,
            final_metrics=dict(state.final_metrics),
            history=list(state.history),
            last_checkpoint=self.run.pointer("last") if self.run else None,
            best_checkpoint=self.run.pointer("best") if self.run else None,
            resumed_from=checkpoint.path if checkpoint is not None else None,
        )

    def _checkpoint_to_resume(self, resume: bool) -> Checkpoint | None:
        if self.run is None:
            if resume:
                raise ValueError("resume=True needs a run_dir to resume from (run_dir is None)")
            return None
        last = self.run.pointer("last")
        if last is None:
            return None
        if not resume:
            raise ValueError(
                f"run_dir {self.run.root} already holds a run (last checkpoint {last}); pass "
                f"resume=True to continue it, or choose another run_dir"
            )
        return load_checkpoint(last)

    def _interrupted(self, state: RunState) -> TrainingInterrupted:
        """Save the current update (unless its checkpoint exists) and say where it is."""
        saved = self.run.pointer("last") if self.run is not None else None
        if self.run is not None and state.last_eval_step != state.step:
            self._save(state, improved=False)
            saved = self.run.pointer("last")
        if self.parallel is not None:
            self.parallel.barrier()  # rank 0's checkpoint is on disk before any rank exits
        name = self.signals.name or "a stop signal"
        where = f"saved {saved}" if saved is not None else "nothing saved (no run_dir)"
        return TrainingInterrupted(
            f"{name} at step {state.step}: {where}", step=state.step, checkpoint=saved,
            signal_name=name,
        )

    def _epoch_length(self) -> int | None:
        """Batches per epoch when the task's batches have a ``len()``, else ``None``."""
        batches = self.task.train_batches(0, epoch_generator(self.config.seed, 0))
        try:
            return len(batches)  # type: ignore[arg-type]
        except TypeError:
            return None

    def _total_steps(self, epoch_length: int | None) -> int | None:
        totals = [self.config.max_steps]
        if self.config.epochs is not None and epoch_length is not None:
            totals.append(self.config.epochs * epoch_length)
        known = [t for t in totals if t is not None]
        return min(known) if known else None

    def _start_state(self, checkpoint: Checkpoint | None, epoch_length: int | None) -> RunState:
        if checkpoint is None:
            seed_everything(self.config.seed)
            if self.parallel is not None and self.parallel.rank > 0:  # its own dropout masks
                seed_everything(rank_seed(self.config.seed, self.parallel.rank))
            return RunState(decay_steps=self._decay_steps(epoch_length))
        state = RunState.from_json(checkpoint.trainer_state, checkpoint.path)
        self._check_resume_config(checkpoint.trainer_state, checkpoint.path)
        return state

    def _decay_steps(self, epoch_length: int | None) -> int | None:
        """The schedule's length in updates, or ``None`` when only the time budget bounds it."""
        if self.config.decay_steps is not None:
            return self.config.decay_steps
        total = self._total_steps(epoch_length)
        if total is None and self.config.minutes is None:
            raise ValueError(
                "cannot tell how long the learning-rate schedule is: set TrainConfig.decay_steps "
                "or minutes (max_steps is None and the task's train_batches() has no len())"
            )
        return total

    def _check_resume_config(self, saved: dict[str, Any], path: Path) -> None:
        current = self.config.to_dict()
        before = saved.get("train_config", {})
        differences = [
            f"{name}: checkpoint {before.get(name)!r}, config {current[name]!r}"
            for name in RESUME_FIELDS
            if before.get(name) != current[name]
        ]
        if self.config.decay_steps is not None and self.config.decay_steps != saved["decay_steps"]:
            differences.append(
                f"decay_steps: checkpoint {saved['decay_steps']}, config {self.config.decay_steps}"
            )
        if saved.get("metric") != self.task.metric:
            differences.append(
                f"task.metric: checkpoint {saved.get('metric')!r}, task {self.task.metric!r}"
            )
        if differences:
            raise ValueError(
                f"cannot resume {path}: the run was trained with other settings: "
                + "; ".join(differences)
            )

    def _restore(self, checkpoint: Checkpoint) -> dict[str, Any]:
        checkpoint.load_into(self.model)
        training = checkpoint.training_state()
        if training is None:
            raise CheckpointError(f"{checkpoint.path} holds no optimizer/RNG state: cannot resume")
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        if self.parallel is None or self.parallel.rank == 0:
            return training["rng"]
        every_rank = training.get("rng_ranks")
        if isinstance(every_rank, list) and len(every_rank) == self.parallel.world:
            return every_rank[self.parallel.rank]
        # Saved by another number of processes: a fresh stream of its own for this rank.
        step = int(checkpoint.trainer_state.get("step", 0))
        seed_everything(rank_seed(self.config.seed + step, self.parallel.rank))
        return None

    # ---------------------------------------------------------------------------- loop
    def _seconds(self, state: RunState) -> float:
        """The wall time this run has trained, resumed runs included. On several processes it
        is the value the ranks agreed on at the last update (one clock for the schedule and
        the budget, so every rank stops at the same update with the same learning rate)."""
        if self.parallel is None:
            self.now = state.seconds + self.clock() - self.start
        return self.now

    def _budget_spent(self, state: RunState) -> str | None:
        if self.config.max_steps is not None and state.step >= self.config.max_steps:
            return "max_steps"
        if self.config.minutes is not None and self._seconds(state) >= self.config.minutes * 60:
            return "time"
        return None

    def _stop_requested(self) -> bool:
        if self.parallel is not None:
            return self.parallel.stop_requested  # agreed at the last update
        return self.signals.requested is not None

    def _epoch_batches(self, state: RunState) -> Iterator[Any]:
        """The batches of ``state.epoch`` after the ``state.batch_in_epoch`` already trained on."""
        generator = epoch_generator(self.config.seed, state.epoch)
        batches = iter(self.task.train_batches(state.epoch, generator))
        for _ in range(state.batch_in_epoch):
            if next(batches, _END) is _END:
                break
        return batches

    def _loop(self, state: RunState, rng_state: dict[str, Any] | None) -> str:
        eval_every = self.config.eval_every
        while True:
            if self.config.epochs is not None and state.epoch >= self.config.epochs:
                return "epochs"
            reason = self._budget_spent(state)
            if reason is not None:
                return reason
            batches = self._epoch_batches(state)
            if rng_state is not None:
                restore_rng_state(rng_state)
                rng_state = None
            trained_any = state.batch_in_epoch > 0
            for batch in batches:
                trained_any = True
                self._train_step(batch, state)
                if self._stop_requested():
                    return "interrupted"
                if eval_every is not None and state.step % eval_every == 0:
                    self._evaluate_and_save(state)
                reason = self._budget_spent(state)
                if reason is not None:
                    return reason
            if not trained_any:
                raise ValueError(f"task.train_batches(epoch={state.epoch}) yielded no batches")
            state.epoch += 1
            state.batch_in_epoch = 0
            if state.last_eval_step != state.step:
                self._evaluate_and_save(state)

    def _train_step(self, batch: Any, state: RunState) -> None:
        step = state.step + 1
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        if self.parallel is None:
            result = check_step_loss(self.task.loss(self.model, batch), step)
            loss = float(result.loss.detach())
            tokens = result.tokens
            if not math.isfinite(loss):
                raise self._diverged(self._nonfinite_loss(loss, batch), step, state)
            result.loss.backward()
        else:
            result, loss, tokens = self._parallel_loss(batch, step, state)
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm is not None else math.inf
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not math.isfinite(norm):
            bad = [
                name for name, p in self.model.named_parameters()
                if p.grad is not None and not bool(torch.isfinite(p.grad).all())
            ]
            raise self._diverged(
                f"the gradient norm is {norm} (non-finite gradients in {bad[:5]})", step, state
            )
        self.optimizer.step()
        if self.schedule.budget_seconds is not None:  # a time budget drives the schedule
            self.schedule.seconds = self._seconds(state)
        self.scheduler.step()
        state.step = step
        state.batch_in_epoch += 1
        state.tokens += tokens
        record = self.progress.step(
            step=step, epoch=state.epoch, loss=loss, tokens=tokens, lr=lr,
            extra={"grad_norm": norm, **result.extra},
        )
        if record is not None:
            state.history.append(record)

    def _nonfinite_loss(self, loss: float, batch: Any) -> str:
        where = locate(self.model, lambda: self.task.loss(self.model, batch))
        found = f"; the first non-finite output is that of {where}" if where else ""
        return f"the loss is {loss}{found}"

    def _parallel_loss(self, batch: Any, step: int, state: RunState) -> tuple[StepLoss, float, int]:
        """This rank's share of the loss, backward done: ``(its StepLoss, the token-mean loss
        over every rank, the global token count)``; every rank raises together on an error."""
        parallel = self.parallel
        assert parallel is not None  # internal invariant, not user input
        result: StepLoss | None = None
        problem: BaseException | None = None
        try:
            mine, counts = parallel.shard(batch)
            result = check_step_loss(self.task.loss(parallel.ddp, mine), step)
            loss = float(result.loss.detach())
        except Exception as error:  # every rank must hear of it before the backward
            problem, loss = error, math.nan
        tokens = result.tokens if result is not None and counts else 0
        stop = self.signals.requested is not None
        now = state.seconds + self.clock() - self.start
        mean, total, bad, self.now = parallel.agree_step(loss, tokens, problem, step, now, stop)
        assert result is not None  # agree_step raised otherwise
        if bad:
            what = f"the loss is not finite on rank(s) {bad}"
            if parallel.rank in bad:
                what += f" (here: {self._nonfinite_loss(loss, mine)})"
            raise self._diverged(what, step, state)
        parallel.scale(result.loss, tokens, total).backward()
        return result, mean, total

    def _diverged(self, what: str, step: int, state: RunState) -> TrainingDiverged:
        last = self.run.pointer("last") if self.run is not None else None
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        return TrainingDiverged(
            f"training stopped at step {step} (epoch {state.epoch}, batch "
            f"{state.batch_in_epoch + 1}): {what}; nothing of this update was applied; {kept}",
            step=step,
            last_checkpoint=last,
        )

    # ---------------------------------------------------------------------- evaluation
    def _evaluate(self) -> dict[str, float]:
        if self.parallel is None:
            return self._evaluate_here()
        metrics, error = None, None
        if self.parallel.rank == 0:
            try:
                metrics = self._evaluate_here()
            except Exception as caught:  # the other ranks must hear of it
                error = caught
        return self.parallel.broadcast_metrics(metrics, error)

    def _evaluate_here(self) -> dict[str, float]:
        with preserved_rng(), torch.no_grad():
            self.model.eval()
            try:
                metrics = self.task.evaluate(self.model)
            finally:
                self.model.train()
        if not isinstance(metrics, dict):
            raise TypeError(f"task.evaluate must return a dict, got {type(metrics).__name__}")
        try:
            metrics = {str(key): float(value) for key, value in metrics.items()}
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"task.evaluate must return numbers, got {metrics!r}: {error}"
            ) from None
        if self.task.metric not in metrics:
            raise ValueError(
                f"task.evaluate returned {sorted(metrics)}, "
                f"without task.metric={self.task.metric!r}"
            )
        if math.isnan(metrics[self.task.metric]):
            raise ValueError(f"task.evaluate returned {self.task.metric}=nan")
        return metrics

    def _evaluate_and_save(self, state: RunState) -> None:
        metrics = self._evaluate()
        record = {"step": state.step, "epoch": state.epoch, "split": "valid", **metrics}
        state.history.append(record)
        state.final_metrics = metrics
        state.last_eval_step = state.step
        value = metrics[self.task.metric]
        improved = state.improves(value, self.task.higher_is_better)
        if improved:
            state.best_metric, state.best_step = value, state.step
        shown = " ".join(f"{key} {val:.4g}" for key, val in metrics.items())
        self.progress.write(
            f"eval step {state.step}: {shown} (best {self.task.metric} "
            f"{state.best_metric:.4g} at step {state.best_step})"
        )
        self._save(state, improved=improved)

    def _save(self, state: RunState, *, improved: bool) -> None:
        """Checkpoint the current update (``best`` too when ``improved``); a collective on
        several processes (every rank's RNG state is gathered), rank 0 writes."""
        rng = capture_rng_state()
        every_rank = None
        if self.parallel is not None and self.run is not None:  # a collective: every rank
            every_rank = self.parallel.gather_objects(rng)
        if self.run is None or not self.main:
            return
        trainer_state = state.to_json()
        trainer_state["seconds"] = self._seconds(state)
        trainer_state.update(
            metric=self.task.metric,
            higher_is_better=self.task.higher_is_better,
            train_config=self.config.to_dict(),
        )
        save_checkpoint(
            self.run.root,
            self.model,
            step=state.step,
            best=improved,
            extras=self.task.checkpoint_extras(),
            trainer_state=trainer_state,
            training_state={
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng,
                **({"rng_ranks": every_rank} if every_rank is not None else {}),
            },
        )


_END = object()
