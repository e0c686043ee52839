"""What each spawned rank runs in ``test_data_parallel.py`` (module level, so ``spawn`` can
import it): the tiny copy task of the Trainer tests, sharded by rows."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from attnkit.training import TrainConfig, Trainer, TrainingDiverged, load_checkpoint
from attnkit.training.parallel import RankFailed, shard_rows
from tests.training._tiny import CopyConfig, CopyModel, CopyTask

CONFIG = dict(lr=0.05, warmup_steps=1, decay_steps=8, weight_decay=0.01, log_every=1)


class ShardedCopyTask(CopyTask):
    """The copy task (padded rows: each rank's token count differs) with ``shard``; 65
    examples in batches of 16, so each epoch ends with a batch of one row (fewer than ranks)."""

    def __init__(self) -> None:
        super().__init__(n=65)

    def shard(self, batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        return shard_rows(batch, rank, world)


class FailingTask(ShardedCopyTask):
    """``loss`` raises (or returns NaN) on one rank at step ``at``."""

    def __init__(self, rank: int, bad_rank: int, at: int, nan: bool) -> None:
        super().__init__()
        self.rank, self.bad_rank, self.at, self.nan, self.calls = rank, bad_rank, at, nan, 0

    def loss(self, model, batch):
        self.calls += 1
        result = super().loss(model, batch)
        if self.rank == self.bad_rank and self.calls == self.at:
            if not self.nan:
                raise ValueError("a bad batch on this rank")
            result.loss = result.loss * float("nan")
        return result


def model() -> CopyModel:
    torch.manual_seed(0)
    return CopyModel(CopyConfig())


def train(rank: int, world: int, out: str) -> None:
    """3 steps into ``out/run`` (checkpoint at step 2 and 3), then resume to 6 (step 5 is the
    one-row batch, step 6 the next epoch); write the
    weights of each rank to ``out/rank{r}.pt``."""
    run = Path(out) / "run"
    first = Trainer(model(), ShardedCopyTask(), TrainConfig(max_steps=3, eval_every=2, **CONFIG),
                    run_dir=run, stream=io.StringIO())
    result = first.fit()
    assert result.steps == 3 and result.last_checkpoint is not None
    # The checkpoint holds the bare model's weights (no "module." prefix of the wrapper).
    load_checkpoint(run).load_into(model())
    resumed = model()
    again = Trainer(resumed, ShardedCopyTask(), TrainConfig(max_steps=6, eval_every=2, **CONFIG),
                    run_dir=run, stream=io.StringIO())
    result = again.fit(resume=True)
    assert result.steps == 6 and result.epochs == 1 and result.resumed_from is not None
    torch.save(resumed.state_dict(), Path(out) / f"rank{rank}.pt")


def failures(rank: int, world: int) -> None:
    """An error or a NaN loss on one rank stops every rank; a task without shard is refused."""
    config = TrainConfig(max_steps=4, **CONFIG)
    task = FailingTask(rank, bad_rank=1, at=2, nan=False)
    expected = (ValueError, "a bad batch") if rank == 1 else (RankFailed, "other process")
    with pytest.raises(expected[0], match=expected[1]):
        Trainer(model(), task, config, stream=io.StringIO()).fit()

    task = FailingTask(rank, bad_rank=0, at=3, nan=True)
    with pytest.raises(TrainingDiverged, match=r"step 3 .*not finite on rank\(s\) \[0\]"):
        Trainer(model(), task, config, stream=io.StringIO()).fit()

    with pytest.raises(ValueError, match="has no shard"):
        Trainer(model(), CopyTask(), config, stream=io.StringIO())


class DropoutCopyModel(CopyModel):
    """The copy model with dropout on the embeddings: every step draws from the rank's RNG."""

    def __init__(self, config: CopyConfig) -> None:
        super().__init__(config)
        self.drop = nn.Dropout(0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.drop(self.embed(tokens))))  # (B, T, V)


def dropout_model() -> DropoutCopyModel:
    torch.manual_seed(0)
    return DropoutCopyModel(CopyConfig())


def rank_streams(rank: int, world: int, out: str) -> None:
    """Each rank draws its own dropout masks, and a resume continues every rank's stream:
    4 steps straight equal 2 steps, a checkpoint, and 2 more after resuming."""
    config = dict(eval_every=2, **CONFIG)
    whole = dropout_model()
    Trainer(whole, ShardedCopyTask(), TrainConfig(max_steps=4, **config),
            run_dir=Path(out) / "whole", stream=io.StringIO()).fit()
    draws: list = [None] * world
    dist.all_gather_object(draws, torch.rand(4))
    assert not torch.equal(draws[0], draws[1]), "the ranks share one random stream"

    Trainer(dropout_model(), ShardedCopyTask(), TrainConfig(max_steps=2, **config),
            run_dir=Path(out) / "split", stream=io.StringIO()).fit()
    resumed = dropout_model()
    Trainer(resumed, ShardedCopyTask(), TrainConfig(max_steps=4, **config),
            run_dir=Path(out) / "split", stream=io.StringIO()).fit(resume=True)
    torch.testing.assert_close(torch.rand(4), draws[rank], atol=0, rtol=0)
    for name, want in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], want, atol=0, rtol=0,
                                   msg=lambda m, n=name: f"rank {rank} {n}: {m}")
