"""Data-parallel training on 2 ``gloo`` processes equals one process with the same batches."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from attnkit.training import TrainConfig, Trainer
from attnkit.training.parallel import TooFewRows, row_range, shard_rows
from tests.distributed._spawn import run_ranks
from tests.distributed._train_workers import (
    CONFIG,
    ShardedCopyTask,
    failures,
    model,
    rank_streams,
    train,
)


def test_two_ranks_train_the_same_weights_as_one_process(tmp_path: Path) -> None:
    run_ranks(2, train, str(tmp_path))
    single = model()
    Trainer(single, ShardedCopyTask(), TrainConfig(max_steps=6, **CONFIG),
            stream=io.StringIO()).fit()
    want = single.state_dict()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-5,
                                       msg=lambda m, n=name, r=rank: f"rank {r} {n}: {m}")
    # Moved at all (the comparison is not of two untouched initialisations).
    assert not torch.equal(want["out.weight"], model().state_dict()["out.weight"])
    # Only rank 0 wrote: the run folder beside the weights the workers saved.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.pt", "rank1.pt", "run"]


def test_each_rank_draws_its_own_dropout_and_a_resume_continues_every_stream(
    tmp_path: Path,
) -> None:
    run_ranks(2, rank_streams, str(tmp_path))


def test_an_error_on_one_rank_stops_every_rank() -> None:
    run_ranks(2, failures)


def test_shard_rows_splits_every_tensor_the_same_way() -> None:
    assert [row_range(7, r, 3) for r in range(3)] == [(0, 3), (3, 5), (5, 7)]
    batch = {"x": torch.arange(10).reshape(5, 2), "y": (torch.arange(5), "tag"), "n": 3}
    parts = [shard_rows(batch, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([p["x"] for p in parts]), batch["x"])
    assert parts[1]["y"][0].tolist() == [3, 4] and parts[1]["y"][1] == "tag"
    with pytest.raises(TooFewRows, match="3 rows cannot be split over 4"):
        row_range(3, 0, 4)
    with pytest.raises(ValueError, match="row counts \\[2, 5\\]"):
        shard_rows((torch.zeros(5), torch.zeros(2)), 0, 2)
