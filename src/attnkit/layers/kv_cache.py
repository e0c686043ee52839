"""A key/value cache for incremental decoding, unbounded or bounded with an eviction policy.

Self-attention caches *grow*: each decoding step appends the new keys and values and attends
over everything held. Cross-attention caches are *static*: the projected encoder memory is
stored on the first step and reused after.

A bounded cache (``max_len=M``) owns exactly ``M`` slots from its first append on; when new
positions arrive and the slots are full, it first evicts as many held positions as needed and
writes the new keys into the freed slots (in place: no copy of the rest, no growth). What it
keeps (FORMULAS.md, "keeping only what matters"):

- ``"full"``: everything; appending past ``M`` is an error (``M`` is then only a hard limit).
- ``"window"``: the ``M`` most recent positions.
- ``"sinks"``: the first ``sinks`` positions and the ``M − sinks`` most recent (StreamingLLM,
  Xiao et al. 2024).
- ``"h2o"``: the ``r = round(recent · M)`` most recent positions and the ``M − r`` with the
  largest accumulated attention ``A_j = Σ_i P_ij`` over every query that has seen them
  (heavy hitters, Zhang et al. 2023), greedily, per batch row and key/value head (equal
  scores in any order). The layer feeds ``A`` after each call with :meth:`KVCache.observe`
  (the ``"key_totals"`` statistic of :func:`attnkit.attention`).

Eviction happens *before* the new positions are written, so every query attends to at most
``M`` keys, its own included, and the storage never holds more than ``M``.

Positions. Each slot remembers the original position of its key (:attr:`KVCache.positions`);
nothing is re-indexed. Once something has been evicted the slots are no longer in position
order, so layers ask :meth:`KVCache.distances` for the query–key distances (relative
positions, ALiBi, and causality inside a chunk of several new positions). RoPE keys are stored
already rotated at their original position, so a kept key scores exactly as in the full pass.

Storage of an unbounded cache grows by doubling (amortised O(1) copies per appended position).
The cache is written in place, so it is for inference (decode under ``torch.no_grad()``).

Shape legend: B batch, G key/value heads, S held positions, n new positions, D/Dv head dims,
M ``max_len``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

POLICIES = ("full", "window", "sinks", "h2o")
_LAST = 1 << 62  # sort key that puts a sink after every other held position


@dataclass(frozen=True)
class CachePolicy:
    """How the self-attention caches of a decoder are bounded (one :class:`KVCache` per layer
    is made from it with :meth:`new`).

    Attributes:
        max_len: slots per layer (``None``: unbounded, only with ``policy="full"``).
        policy: ``"full"``, ``"window"``, ``"sinks"`` or ``"h2o"`` (see the module docstring).
        sinks: how many first positions ``"sinks"`` keeps (StreamingLLM uses 4); below
            ``max_len``.
        recent: the share of ``max_len`` that ``"h2o"`` keeps for the most recent positions
            (H2O's experiments split the budget equally: 0.5); in ``[0, 1]``.

    Raises:
        ValueError/TypeError: an unknown policy, an evicting policy without ``max_len``, a
            non-positive ``max_len``, ``sinks`` not below ``max_len``, ``recent`` outside
            ``[0, 1]``.
    """

    max_len: int | None = None
    policy: str = "full"
    sinks: int = 4
    recent: float = 0.5

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {list(POLICIES)}, got {self.policy!r}")
        if self.max_len is not None and (
            isinstance(self.max_len, bool) or not isinstance(self.max_len, int) or self.max_len < 1
        ):
            raise ValueError(f"max_len must be a positive integer or None, got {self.max_len!r}")
        if self.max_len is None and self.policy != "full":
            raise ValueError(f"policy {self.policy!r} evicts: it needs max_len")
        if isinstance(self.sinks, bool) or not isinstance(self.sinks, int) or self.sinks < 0:
            raise ValueError(f"sinks must be a non-negative integer, got {self.sinks!r}")
        if self.policy == "sinks" and self.sinks >= self.max_len:  # type: ignore[operator]
            raise ValueError(
                f"policy 'sinks' keeps sinks={self.sinks} first positions: max_len must be "
                f"larger, got {self.max_len}"
            )
        if isinstance(self.recent, bool) or not isinstance(self.recent, (int, float)):
            raise TypeError(f"recent must be a number in [0, 1], got {type(self.recent).__name__}")
        if not 0.0 <= self.recent <= 1.0:
            raise ValueError(f"recent must be in [0, 1], got {self.recent!r}")

    @property
    def evicts(self) -> bool:
        return self.policy != "full"

    def new(self) -> KVCache:
        """An empty cache following this policy."""
        return KVCache(**dataclasses.asdict(self))


class KVCache:
    """Keys ``(B, G, S, D)`` and values ``(B, G, S, Dv)`` held for one attention layer.

    Args:
        max_len, policy, sinks, recent: as :class:`CachePolicy` (default: unbounded, keeps
            everything).
        static: store once and reuse (cross-attention over a fixed memory) instead of
            appending; only with the default policy.

    ``len(cache)`` is the number of positions held; :attr:`seen` the number ever appended.

    Raises:
        ValueError/TypeError: see :class:`CachePolicy`; a policy or ``max_len`` with ``static``.
    """

    def __init__(
        self,
        *,
        max_len: int | None = None,
        policy: str = "full",
        sinks: int = 4,
        recent: float = 0.5,
        static: bool = False,
    ) -> None:
        self.policy = CachePolicy(max_len, policy, sinks, recent)
        if static and (max_len is not None or policy != "full"):
            raise ValueError("a static KVCache holds a fixed memory: no max_len or policy")
        self.static = static
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self._pos: Tensor | None = None  # (B, G, M) long: each slot's original position
        self._scores: Tensor | None = None  # (B, G, M) ≥ float32: H2O's accumulated attention
        self._length = 0
        self._seen = 0

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        p = self.policy
        return f"KVCache(max_len={p.max_len}, policy={p.policy!r}, held={self._length})"

    @property
    def seen(self) -> int:
        """Positions appended so far (the position of the next one)."""
        return self._seen

    @property
    def filled(self) -> bool:
        """Whether anything is stored (for a static cache: whether the memory is projected)."""
        return self._length > 0

    @property
    def capacity(self) -> int:
        """Slots allocated (``max_len`` for a bounded cache once anything was appended)."""
        return 0 if self._k is None else self._k.shape[2]

    @property
    def evicted(self) -> bool:
        """Whether a position was dropped: slots then no longer follow position order."""
        return self._seen > self._length and not self.static

    @property
    def tracks_attention(self) -> bool:
        """Whether the layer must :meth:`observe` the attention each key receives (H2O)."""
        return self.policy.policy == "h2o"

    @property
    def keys(self) -> Tensor:
        """The held keys ``(B, G, S, D)``, in slot order. Raises ``ValueError`` when empty."""
        if self._k is None:
            raise ValueError("KVCache is empty: nothing has been appended yet")
        return self._k[:, :, : self._length]

    @property
    def values(self) -> Tensor:
        """The held values ``(B, G, S, Dv)``. Raises ``ValueError`` when empty."""
        if self._v is None:
            raise ValueError("KVCache is empty: nothing has been appended yet")
        return self._v[:, :, : self._length]

    @property
    def positions(self) -> Tensor:
        """The original position of each held key, ``(B, G, S)`` long, in slot order."""
        if self._pos is not None:
            return self._pos[:, :, : self._length]
        k = self.keys
        start = self._seen - self._length
        held = torch.arange(start, self._seen, device=k.device)  # (S,)
        return held.expand(k.shape[0], k.shape[1], -1)  # (B, G, S)

    def distances(self, n: int) -> Tensor:
        """``(B, G, n, S)`` long: the position of each of the last ``n`` appended queries minus
        that of each held key (``< 0``: a key after the query, hidden by causality)."""
        queries = torch.arange(self._seen - n, self._seen, device=self.keys.device)  # (n,)
        return queries.view(1, 1, n, 1) - self.positions.unsqueeze(2)  # (B, G, n, S)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add ``k (B, G, n, D)``, ``v (B, G, n, Dv)`` (evicting first when bounded and full);
        return all held keys and values.

        Raises:
            ValueError: shapes that do not match what is stored; appending to a filled static
                cache; more than ``max_len`` new positions at once; a ``"full"`` cache with a
                ``max_len`` that would overflow.
        """
        if self.static and self.filled:
            raise ValueError("a static KVCache is filled once; reuse .keys/.values instead")
        if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError(
                f"KVCache.append: k and v must be (B, G, n, D) with the same (B, G, n), "
                f"got k {tuple(k.shape)} and v {tuple(v.shape)}"
            )
        n, limit = k.shape[2], self.policy.max_len
        if limit is not None and n > limit:
            raise ValueError(
                f"KVCache.append: {n} new positions do not fit max_len={limit}; feed them in "
                f"chunks of at most {limit}"
            )
        if limit is not None and not self.policy.evicts and self._length + n > limit:
            raise ValueError(
                f"KVCache.append: a 'full' cache of max_len={limit} holds {self._length} "
                f"positions and cannot take {n} more (choose an evicting policy)"
            )
        if self._k is None or self._v is None:
            self._allocate(k, v, n)
        else:
            self._check_like(k, v)
        if limit is None:
            self._grow(self._length + n)
            self._write_free(k, v)
        else:
            self._write_bounded(k, v)
        self._seen += n
        return self.keys, self.values

    def observe(self, key_totals: Tensor) -> None:
        """Add each held key's attention summed over this call's queries, ``(B, Hq, S)``
        (``"key_totals"`` of :func:`attnkit.attention` over :attr:`keys`), to H2O's
        accumulated scores; query heads sharing a key/value head add up. No-op for the other
        policies.

        Raises:
            ValueError: a shape that does not match the held keys.
        """
        if not self.tracks_attention or self._scores is None:
            return
        b, g, s = self._scores.shape[0], self._scores.shape[1], self._length
        if key_totals.dim() != 3 or key_totals.shape[0] != b or key_totals.shape[2] != s or (
            key_totals.shape[1] % g
        ):
            raise ValueError(
                f"KVCache.observe: key_totals must be (B, Hq, S) = ({b}, a multiple of {g}, "
                f"{s}), got {tuple(key_totals.shape)}"
            )
        grouped = key_totals.to(self._scores.dtype).view(b, g, -1, s).sum(dim=2)  # (B, G, S)
        self._scores[:, :, :s] += grouped

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index (B',)`` (beam search reorders hypotheses every step)."""
        for name in ("_k", "_v", "_pos", "_scores"):
            buffer = getattr(self, name)
            if buffer is not None:
                setattr(self, name, buffer.index_select(0, index))

    # -- storage -------------------------------------------------------------------------------

    def _allocate(self, k: Tensor, v: Tensor, n: int) -> None:
        limit = self.policy.max_len
        capacity = limit if limit is not None else (n if self.static else max(16, n))
        b, g = k.shape[:2]
        self._k = k.new_empty(b, g, capacity, k.shape[3])  # (B, G, M, D)
        self._v = v.new_empty(b, g, capacity, v.shape[3])  # (B, G, M, Dv)
        if limit is not None:
            self._pos = torch.zeros(b, g, capacity, dtype=torch.long, device=k.device)
            if self.tracks_attention:
                precise = torch.promote_types(k.dtype, torch.float32)
                self._scores = torch.zeros(b, g, capacity, dtype=precise, device=k.device)

    def _check_like(self, k: Tensor, v: Tensor) -> None:
        assert self._k is not None and self._v is not None
        if (k.shape[:2], k.shape[3], v.shape[3]) != (
            self._k.shape[:2],
            self._k.shape[3],
            self._v.shape[3],
        ):
            raise ValueError(
                f"KVCache.append: expected k (B, G, n, D) = {tuple(self._k.shape[:2])} + (n, "
                f"{self._k.shape[3]}) and v Dv {self._v.shape[3]}, got k {tuple(k.shape)} "
                f"and v {tuple(v.shape)}"
            )

    def _grow(self, needed: int) -> None:
        """Unbounded caches: double the storage when ``needed`` slots do not fit."""
        assert self._k is not None and self._v is not None
        if needed > self._k.shape[2]:
            capacity = max(needed, 2 * self._k.shape[2])
            self._k = _grown(self._k, self._length, capacity)
            self._v = _grown(self._v, self._length, capacity)

    def _write_free(self, k: Tensor, v: Tensor) -> None:
        """Write the new positions into the free slots after the held ones."""
        assert self._k is not None and self._v is not None
        s0, s1 = self._length, self._length + k.shape[2]
        self._k[:, :, s0:s1] = k
        self._v[:, :, s0:s1] = v
        if self._pos is not None:
            self._pos[:, :, s0:s1] = torch.arange(self._seen, self._seen + s1 - s0, device=k.device)
        if self._scores is not None:
            self._scores[:, :, s0:s1] = 0.0
        self._length = s1

    def _write_bounded(self, k: Tensor, v: Tensor) -> None:
        """Evict what does not fit, then write the new positions in the freed slots."""
        assert self._k is not None and self._v is not None and self._pos is not None
        n, limit = k.shape[2], self.capacity
        free = limit - self._length
        if n <= free:
            self._write_free(k, v)
            return
        slots = self._victims(n - free, n)  # (B, G, n - free)
        if free:
            tail = torch.arange(self._length, limit, device=k.device)  # (free,)
            slots = torch.cat((tail.expand(*slots.shape[:2], -1), slots), dim=2)  # (B, G, n)
        self._length = limit
        self._k.scatter_(2, slots.unsqueeze(-1).expand(-1, -1, -1, k.shape[3]), k)
        self._v.scatter_(2, slots.unsqueeze(-1).expand(-1, -1, -1, v.shape[3]), v)
        new = torch.arange(self._seen, self._seen + n, device=k.device)  # (n,)
        self._pos.scatter_(2, slots, new.expand_as(slots))
        if self._scores is not None:
            self._scores.scatter_(2, slots, 0.0)

    def _victims(self, count: int, n: int) -> Tensor:
        """``(B, G, count)`` held slots to evict before ``n`` new positions come in."""
        assert self._pos is not None
        pos = self._pos[:, :, : self._length]  # (B, G, S)
        p = self.policy
        if p.policy == "window":
            return pos.topk(count, dim=-1, largest=False).indices
        if p.policy == "sinks":
            rank = torch.where(pos < p.sinks, pos + _LAST, pos)  # (B, G, S)
            return rank.topk(count, dim=-1, largest=False).indices
        assert self._scores is not None and p.max_len is not None  # h2o
        # The r − n most recent held positions are the last r − n appended (they were
        # protected at every earlier step), so they are those at or after this threshold.
        recent = self._seen - max(0, round(p.recent * p.max_len) - n)
        score = self._scores[:, :, : self._length].masked_fill(pos >= recent, float("inf"))
        return score.topk(count, dim=-1, largest=False).indices  # (B, G, count)


def _grown(buffer: Tensor, used: int, capacity: int) -> Tensor:
    bigger = buffer.new_empty(*buffer.shape[:2], capacity, buffer.shape[3])
    bigger[:, :, :used] = buffer[:, :, :used]
    return bigger
