"""Each compile test starts from a clean torch.compile cache (no graph of another test is
reused, and no test's recompilations count against another's limit)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()
