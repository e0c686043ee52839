"""attnkit: the attention mechanism made real, fast and visible.

The one entry point is :func:`attention`; the layers, models and tools are built on it.

The names below are imported when first used (PEP 562), so ``import attnkit`` itself loads
neither PyTorch nor anything else: the ``attnkit`` command can set the thread environment
before PyTorch's OpenMP runtime starts (:mod:`attnkit._threads`). ``attnkit.attention``,
``from attnkit import MultiHeadAttention`` and ``attnkit.kernels`` work as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from attnkit._version import __version__

# name -> the module that defines it
_EXPORTS = {
    "NonFiniteError": "attnkit.checks",
    "set_checks": "attnkit.checks",
    "and_masks": "attnkit.flex",
    "create_block_mask": "attnkit.flex",
    "or_masks": "attnkit.flex",
    "KeyLengths": "attnkit.key_lengths",
    "attention": "attnkit.functional",
    "attention_weights": "attnkit.functional",
    "explain_dispatch": "attnkit.functional",
    "AdditiveAttention": "attnkit.layers",
    "AttentionLayer": "attnkit.layers",
    "CachePolicy": "attnkit.layers",
    "HardAttention": "attnkit.layers",
    "KVCache": "attnkit.layers",
    "LuongAttention": "attnkit.layers",
    "MultiHeadAttention": "attnkit.layers",
    "Normalizer": "attnkit.normalizers",
    "BlockMask": "attnkit.kernels",
    "Score": "attnkit.scores",
    "TopK": "attnkit.statistics",
}
_SUBMODULES = (
    "checks",
    "explain",
    "flex",
    "kernels",
    "masks",
    "normalizers",
    "positions",
    "scores",
    "statistics",
)

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

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports on first use
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
    from attnkit.checks import NonFiniteError, set_checks
    from attnkit.flex import and_masks, create_block_mask, or_masks
    from attnkit.functional import attention, attention_weights, explain_dispatch
    from attnkit.kernels import BlockMask
    from attnkit.key_lengths import KeyLengths
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


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"attnkit.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'attnkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
