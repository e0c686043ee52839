"""Which process may write: the one place the Trainer asks about ranks.

In data-parallel training (:mod:`attnkit.training.parallel`) every rank trains, but only rank
0 evaluates, writes checkpoints and reports progress; the Trainer and the CLI ask this.
"""

from __future__ import annotations

import torch.distributed as dist


def is_main_process() -> bool:
    """``True`` unless ``torch.distributed`` is initialised and this process is not rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
