"""A key/value cache made of given tensors, for tracing one decoding step.

:class:`attnkit.KVCache` keeps Python state (a length, storage written in place that grows by
doubling), which a traced graph cannot carry from one call to the next. :class:`TensorCache`
offers the same interface to :class:`attnkit.MultiHeadAttention`, but holds exactly the tensors
it is given and appends by concatenation, so the keys and values one step reads and writes
become the inputs and outputs of an exported graph.

Shape legend: B batch, G key/value heads, P positions held, n new positions, D/Dv head dims.
"""

from __future__ import annotations

import torch
from torch import Tensor


class TensorCache:
    """The :class:`~attnkit.layers.KVCache` interface over given tensors.

    Args:
        keys: ``(B, G, P, D)`` held keys, or ``None`` for an empty cache.
        values: ``(B, G, P, Dv)`` held values (``None`` with ``keys``).
        static: a cross-attention cache: filled once (by the layer, from the memory) and then
            only read.

    Raises:
        ValueError: only one of ``keys``/``values`` given, or shapes that disagree.
    """

    def __init__(
        self, keys: Tensor | None = None, values: Tensor | None = None, *, static: bool = False
    ) -> None:
        if (keys is None) != (values is None):
            raise ValueError("TensorCache: give both keys and values, or neither")
        if keys is not None and values is not None:
            _check_pair("TensorCache", keys, values)
        self.static = static
        self._k, self._v = keys, values

    @property
    def filled(self) -> bool:
        """Whether anything is held (a static cache then holds the projected memory)."""
        return self._k is not None

    @property
    def seen(self) -> int:
        """Positions held: the position of the next one (a symbolic size when traced)."""
        return 0 if self._k is None else self._k.shape[2]

    #: :class:`~attnkit.layers.KVCache`'s flags: a tensor cache holds every position in order
    #: (no eviction policy) and asks the attention for no statistic
    evicted = False
    tracks_attention = False

    @property
    def keys(self) -> Tensor:
        """The held keys ``(B, G, P, D)``. Raises ``ValueError`` when empty."""
        if self._k is None:
            raise ValueError("TensorCache is empty: nothing has been appended yet")
        return self._k

    @property
    def values(self) -> Tensor:
        """The held values ``(B, G, P, Dv)``. Raises ``ValueError`` when empty."""
        if self._v is None:
            raise ValueError("TensorCache is empty: nothing has been appended yet")
        return self._v

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add ``k (B, G, n, D)``, ``v (B, G, n, Dv)``; return everything held now.

        Raises:
            ValueError: appending to a filled static cache, or shapes that disagree.
        """
        _check_pair("TensorCache.append", k, v)
        if self._k is None or self._v is None:
            self._k, self._v = k, v
        elif self.static:
            raise ValueError("a static TensorCache is filled once; read .keys/.values instead")
        else:
            self._k = torch.cat([self._k, k], dim=2)  # (B, G, P + n, D)
            self._v = torch.cat([self._v, v], dim=2)  # (B, G, P + n, Dv)
        return self._k, self._v


def _check_pair(where: str, k: Tensor, v: Tensor) -> None:
    if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"{where}: keys and values must be (B, G, n, D) with the same (B, G, n), got "
            f"{tuple(k.shape)} and {tuple(v.shape)}"
        )
