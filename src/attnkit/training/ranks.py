"""Which process may write: the one place the Trainer asks about ranks.

Today training runs in one process. When data-parallel training (DistributedDataParallel)
arrives, every rank trains but only rank 0 writes checkpoints and reports progress; this
check is all the Trainer needs to stay correct then.
"""

from __future__ import annotations

import torch.distributed as dist


def is_main_process() -> bool:
    """``True`` unless ``torch.distributed`` is initialised and this process is not rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
