"""Random state: seeding, capture/restore for exact resume, and the per-epoch data generator."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of data-parallel rank ``rank``'s own random stream (its dropout masks): ``seed``
    itself for rank 0, an unrelated 63-bit seed mixed from ``(seed, rank)`` for the others."""
    if rank == 0:
        return seed
    words = np.random.SeedSequence([seed, rank]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator that orders the data of ``epoch``: a function of ``(seed, epoch)`` only.

    The two numbers are mixed with NumPy's ``SeedSequence`` so nearby seeds and epochs give
    unrelated streams (``seed=1, epoch=0`` is not ``seed=0, epoch=1``).
    """
    words = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator(device="cpu")
    generator.manual_seed((int(words[0]) << 31) ^ int(words[1]))
    return generator


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain values (see ``serialize.split_tensors``)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": np_state["state"]["key"].tolist(),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned.

    Raises:
        ValueError: the state lacks a part, or holds CUDA states and this process has no GPU.
    """
    missing = {"python", "numpy", "torch"} - set(state)
    if missing:
        raise ValueError(f"RNG state lacks {sorted(missing)}; got keys {sorted(state)}")
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np.asarray(np_state["key"], dtype=np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state:
        if not torch.cuda.is_available() or torch.cuda.device_count() < len(state["cuda"]):
            raise ValueError(
                f"RNG state holds {len(state['cuda'])} CUDA generator(s) but this process sees "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s)"
            )
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (an evaluation) without moving any global RNG of the training."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)
