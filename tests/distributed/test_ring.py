"""Ring attention on 2 and 4 ``gloo`` processes against single-process ``reference`` attention.

Each test spawns its processes once and runs several cases in them (spawning costs more than
the cases). Forward and the gradients of q, k, v are compared on every rank's slice.
"""

from __future__ import annotations

import pytest
import torch

from attnkit.distributed import (
    gather_sequence,
    ring_attention,
    sequence_positions,
    split_sequence,
)
from tests.distributed._ring_workers import bad_inputs, ring_cases
from tests.distributed._spawn import run_ranks

TWO_RANKS = [
    {"local": 6},
    {"local": 6, "causal": True},
    {"local": 8, "causal": True, "layout": "zigzag", "chunk": 3},
    {"local": 7, "window": (3, 2), "kv_chunks": 3, "chunk": 2},
    {"local": 8, "causal": True, "window": (5, 0), "layout": "zigzag", "shape": (1, 4, 2, 5, 3)},
    {"local": 6, "q_local": 4, "causal": True, "shape": (1, 3, 1, 4, 4)},  # Lq != Lk, MQA
    {"local": 5, "window": (0, 0)},  # each query sees only its own key
    {"local": 8, "causal": True, "layout": "zigzag", "dtype": torch.float32, "kv_chunks": 2},
]
FOUR_RANKS = [
    {"local": 4, "causal": True, "layout": "zigzag", "shape": (1, 4, 2, 4, 4)},
    {"local": 3, "window": (4, 1), "kv_chunks": 3},
    {"local": 3},
]


def test_two_ranks_match_single_process_attention() -> None:
    run_ranks(2, ring_cases, TWO_RANKS)


def test_four_ranks_match_single_process_attention() -> None:
    run_ranks(4, ring_cases, FOUR_RANKS, timeout=180)


def test_bad_input_raises_on_every_rank_without_hanging() -> None:
    run_ranks(2, bad_inputs)


def test_no_process_group_is_a_clear_error() -> None:
    q = torch.randn(1, 1, 2, 2)
    with pytest.raises(RuntimeError, match="init_process_group"):
        ring_attention(q, q, q)
    with pytest.raises(RuntimeError, match="init_process_group"):
        gather_sequence(q)


def test_layouts_cover_the_sequence_once() -> None:
    """Positions of all ranks are a permutation of the sequence; split follows the positions."""
    x = torch.arange(24).reshape(1, 1, 24, 1)
    for layout, world in (("contiguous", 3), ("zigzag", 3), ("zigzag", 2)):
        seen = []
        for rank in range(world):
            pos = sequence_positions(24 // world, rank=rank, world=world, layout=layout)
            part = split_sequence(x, rank=rank, world=world, layout=layout)
            assert part.flatten().tolist() == pos.tolist()
            seen += pos.tolist()
        assert sorted(seen) == list(range(24))
    # zigzag pairs an early chunk with a late one: rank 0 of 2 holds chunks 0 and 3 of 4.
    assert sequence_positions(4, rank=0, world=2, layout="zigzag").tolist() == [0, 1, 6, 7]
    with pytest.raises(ValueError, match="not divisible into 6"):
        split_sequence(x[:, :, :10], rank=0, world=3, layout="zigzag")
    with pytest.raises(ValueError, match="even"):
        sequence_positions(3, rank=0, world=2, layout="zigzag")
