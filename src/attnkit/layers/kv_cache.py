"""A key/value cache for incremental decoding.

Self-attention caches *grow*: each decoding step appends the new keys and values and attends
over everything so far. Cross-attention caches are *static*: the projected encoder memory is
stored on the first step and reused after.

Storage grows by doubling, so appending one position at a time costs amortised O(1) copies
instead of re-concatenating the whole prefix every step. The cache is written in place, so
it is for inference (decode under ``torch.no_grad()``); train with the full causal pass.
"""

from __future__ import annotations

from torch import Tensor


class KVCache:
    """Keys ``(B, Hkv, L, D)`` and values ``(B, Hkv, L, Dv)`` seen so far by one attention layer.

    Args:
        static: store once and reuse (cross-attention over a fixed memory) instead of appending.
    """

    def __init__(self, *, static: bool = False) -> None:
        self.static = static
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self._length = 0

    def __len__(self) -> int:
        return self._length

    @property
    def seen(self) -> int:
        """Positions appended so far (the position of the next one)."""
        return self._length

    @property
    def filled(self) -> bool:
        """Whether anything is stored (for a static cache: whether the memory is projected)."""
        return self._length > 0

    @property
    def keys(self) -> Tensor:
        """The stored keys ``(B, Hkv, L, D)``. Raises ``ValueError`` when empty."""
        if self._k is None:
            raise ValueError("KVCache is empty: nothing has been appended yet")
        return self._k[:, :, : self._length]

    @property
    def values(self) -> Tensor:
        """The stored values ``(B, Hkv, L, Dv)``. Raises ``ValueError`` when empty."""
        if self._v is None:
            raise ValueError("KVCache is empty: nothing has been appended yet")
        return self._v[:, :, : self._length]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add ``k (B, Hkv, n, D)``, ``v (B, Hkv, n, Dv)``; return all keys and values so far.

        Raises:
            ValueError: shapes that do not match what is stored, or appending to a filled
                static cache.
        """
        if self.static and self.filled:
            raise ValueError("a static KVCache is filled once; reuse .keys/.values instead")
        if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError(
                f"KVCache.append: k and v must be (B, Hkv, n, D) with the same (B, Hkv, n), "
                f"got k {tuple(k.shape)} and v {tuple(v.shape)}"
            )
        n = k.shape[2]
        if self._k is None or self._v is None:
            capacity = n if self.static else max(16, n)
            self._k = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])
            self._v = v.new_empty(v.shape[0], v.shape[1], capacity, v.shape[3])
        elif (k.shape[:2], k.shape[3], v.shape[3]) != (
            self._k.shape[:2],
            self._k.shape[3],
            self._v.shape[3],
        ):
            raise ValueError(
                f"KVCache.append: expected k (B, Hkv, n, D) = {tuple(self._k.shape[:2])} + (n, "
                f"{self._k.shape[3]}) and v Dv {self._v.shape[3]}, got k {tuple(k.shape)} "
                f"and v {tuple(v.shape)}"
            )
        needed = self._length + n
        if needed > self._k.shape[2]:
            capacity = max(needed, 2 * self._k.shape[2])
            self._k = _grow(self._k, self._length, capacity)
            self._v = _grow(self._v, self._length, capacity)
        self._k[:, :, self._length : needed] = k
        self._v[:, :, self._length : needed] = v
        self._length = needed
        return self.keys, self.values

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index (B',)`` (beam search reorders hypotheses every step)."""
        if self._k is not None and self._v is not None:
            self._k = self._k.index_select(0, index)
            self._v = self._v.index_select(0, index)


def _grow(buffer: Tensor, used: int, capacity: int) -> Tensor:
    bigger = buffer.new_empty(*buffer.shape[:2], capacity, buffer.shape[3])
    bigger[:, :, :used] = buffer[:, :, :used]
    return bigger
