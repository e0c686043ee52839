"""attnkit: the attention mechanism made real, fast and visible.

The one entry point is :func:`attention`; the layers, models and tools are built on it.
"""

from attnkit import (
    checks,
    explain,
    flex,
    kernels,
    masks,
    normalizers,
    positions,
    scores,
    statistics,
)
from attnkit._version import __version__
from attnkit.checks import NonFiniteError, set_checks
from attnkit.flex import and_masks, create_block_mask, or_masks
from attnkit.functional import KeyLengths, attention, attention_weights, explain_dispatch
from attnkit.kernels import BlockMask
from attnkit.layers import (
    AdditiveAttention,
    AttentionLayer,
    CachePolicy,
    HardAttention,
    KVCache,
    LuongAttention,
    MultiHeadAttention,
)
from attnkit.normalizers import Normalizer
from attnkit.scores import Score
from attnkit.statistics import TopK

__all__ = [
    "AdditiveAttention",
    "AttentionLayer",
    "BlockMask",
    "CachePolicy",
    "HardAttention",
    "KVCache",
    "KeyLengths",
    "LuongAttention",
    "MultiHeadAttention",
    "NonFiniteError",
    "Normalizer",
    "Score",
    "TopK",
    "__version__",
    "and_masks",
    "attention",
    "attention_weights",
    "checks",
    "create_block_mask",
    "explain",
    "explain_dispatch",
    "flex",
    "kernels",
    "masks",
    "normalizers",
    "or_masks",
    "positions",
    "scores",
    "set_checks",
    "statistics",
]
