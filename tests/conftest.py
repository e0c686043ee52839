"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch

# Test tensors are tiny: one thread avoids OpenMP spin-waiting against other processes.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
