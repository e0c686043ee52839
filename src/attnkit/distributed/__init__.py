"""attnkit beyond one process, on PyTorch's own ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Sequence parallelism: :func:`ring_attention` computes attention over a sequence split across
the ranks of a process group, forward and backward, without any rank holding the whole
sequence; :func:`split_sequence` / :func:`gather_sequence` move between the full sequence and
the per-rank slices (``"contiguous"`` or the causally balanced ``"zigzag"`` layout)::

    # torchrun --nproc-per-node 4 script.py
    torch.distributed.init_process_group("gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    q, k, v = (split_sequence(t, rank=rank, world=world, layout="zigzag") for t in (q, k, v))
    out = ring_attention(q, k, v, causal=True, layout="zigzag")   # this rank's slice

Data parallelism lives in the Trainer (``attnkit train TASK --nproc N``; see
``docs/scaling.md``).
"""

from attnkit.distributed.layout import (
    LAYOUTS,
    gather_sequence,
    sequence_positions,
    split_sequence,
)
from attnkit.distributed.ring import ring_attention

__all__ = [
    "LAYOUTS",
    "gather_sequence",
    "ring_attention",
    "sequence_positions",
    "split_sequence",
]
