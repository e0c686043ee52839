"""Attention layers (``nn.Module``s): they project, reshape and call :func:`attnkit.attention`."""

from attnkit.layers.additive import AdditiveAttention
from attnkit.layers.base import AttentionLayer
from attnkit.layers.coverage import CoverageAttention
from attnkit.layers.hard import HardAttention
from attnkit.layers.kv_cache import CachePolicy, KVCache
from attnkit.layers.location_aware import LocationAwareAttention
from attnkit.layers.luong import LuongAttention
from attnkit.layers.multihead import MultiHeadAttention
from attnkit.layers.relative import RelativeMultiHeadAttention
from attnkit.layers.single import ScoreParameters, SingleHeadAttention

__all__ = [
    "AdditiveAttention",
    "AttentionLayer",
    "CachePolicy",
    "CoverageAttention",
    "HardAttention",
    "KVCache",
    "LocationAwareAttention",
    "LuongAttention",
    "MultiHeadAttention",
    "RelativeMultiHeadAttention",
    "ScoreParameters",
    "SingleHeadAttention",
]
