"""Causal self-attention with learned relative positions (Shaw et al. 2018), computed with the
memory-efficient skewing of the Music Transformer (Huang et al. 2018).

Each head learns an embedding ``Eᵣ`` per distance ``−(max_distance−1) .. 0``; the scores are
``(QKᵀ + skew(Q Eᵣᵀ)) / √D``. The bias ``skew(Q Eᵣᵀ) / √D`` comes from
:func:`attnkit.positions.relative_skew` and is handed to :func:`attnkit.attention` as an
additive mask with ``causal=True``; the layer itself only projects and reshapes. Distances
beyond ``max_distance − 1`` share the farthest embedding (clipping, as in Shaw et al.), so the
layer runs on sequences longer than it was trained on (generation with a KV cache).

With a bounded KV cache that has evicted, the held keys are no longer at consecutive
positions: the bias is then gathered by each key's original distance
(:func:`attnkit.positions.relative_at`, the same clipped table), so a kept key scores exactly
as in the full pass.

Shape legend: B batch, L new positions, S all positions (cache included), E embed dim,
H query heads, G key/value heads, Dh = E / H head dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnkit.layers import masking
from attnkit.layers.kv_cache import KVCache
from attnkit.layers.multihead import MultiHeadAttention, evicted_mask
from attnkit.positions import relative_at, relative_skew


class RelativeMultiHeadAttention(MultiHeadAttention):
    """Causal multi-head self-attention with relative position embeddings per head.

    The projections (``in_proj_weight``/``in_proj_bias``, ``out_proj``) are those of
    :class:`MultiHeadAttention` (batch first); the layer adds
    ``relative (H, max_distance, Dh)``, whose row ``r`` embeds the distance
    ``r − (max_distance − 1)`` (the last row is distance 0).

    Args:
        embed_dim, num_heads, num_kv_heads, dropout, bias, backend, device, dtype: as for
            :class:`MultiHeadAttention`.
        max_distance: how many distances get their own embedding (usually the training
            length); farther keys share the last one.

    Raises:
        ValueError: bad sizes (see :class:`MultiHeadAttention`), ``max_distance`` < 1.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        max_distance: int,
        num_kv_heads: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            embed_dim,
            num_heads,
            dropout,
            bias,
            batch_first=True,
            device=device,
            dtype=dtype,
            num_kv_heads=num_kv_heads,
            backend=backend,
        )
        if isinstance(max_distance, bool) or not isinstance(max_distance, int) or max_distance < 1:
            raise ValueError(f"max_distance must be a positive integer, got {max_distance!r}")
        self.max_distance = max_distance
        self.relative = nn.Parameter(
            torch.empty(num_heads, max_distance, self.head_dim, device=device, dtype=dtype)
        )
        # tensor2tensor's initialiser for relative embeddings: N(0, Dh^-1/2)
        nn.init.normal_(self.relative, std=self.head_dim**-0.5)

    def distance_embeddings(self, length: int) -> Tensor:
        """``Eᵣ`` for the distances ``−(length−1) .. 0``: ``(H, length, Dh)`` (clipped beyond
        ``max_distance − 1``)."""
        if length <= self.max_distance:
            return self.relative[:, self.max_distance - length :]  # (H, length, Dh)
        farthest = self.relative[:, :1].expand(-1, length - self.max_distance, -1)
        return torch.cat((farthest, self.relative), dim=1)  # (H, length, Dh)

    def forward(  # type: ignore[override]
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = True,
        *,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Causal self-attention of ``query (B, L, E)`` (``(L, E)`` unbatched) over itself
        and, with a growing ``cache``, over every position seen before.

        ``key``/``value`` must be ``None`` or ``query`` itself and ``is_causal`` True (relative
        distances here run ``−(S−1) .. 0``); ``key_padding_mask (B, S)`` and ``attn_mask``
        follow :meth:`MultiHeadAttention.forward`.

        Returns:
            ``(output (B, L, E), weights)``: weights ``(B, L, S)`` averaged over heads, or
            ``(B, H, L, S)``, or ``None`` when not asked for.

        Raises:
            ValueError: cross-attention, ``is_causal=False``, a static cache, bad shapes.
        """
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("RelativeMultiHeadAttention is self-attention: pass query only")
        if not is_causal:
            raise ValueError(
                "RelativeMultiHeadAttention is causal (distances −(S−1)..0): is_causal=True"
            )
        if cache is not None and cache.static:
            raise ValueError("RelativeMultiHeadAttention needs a growing KVCache, not a static one")
        unbatched = query.dim() == 2
        x = self._batch_first(query, "query")  # (B, L, E)
        b, length, width = x.shape
        if width != self.embed_dim:
            raise ValueError(
                f"query must have {self.embed_dim} features, got shape {tuple(x.shape)}"
            )
        q, k, v = self._project(x, x, x)  # (B, H, L, Dh), (B, G, L, Dh), (B, G, L, Dh)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, G, S, Dh)
        if cache is not None and cache.evicted:
            distances = self._cache_distances(cache, length, key_padding_mask, attn_mask)
            table = self.relative.to(q.dtype)  # (H, max_distance, Dh)
            rel = relative_at(q / math.sqrt(self.head_dim), table, distances)  # (B, H, L, S)
            mask = evicted_mask(distances, rel, True, q.dtype)
            return self._attend(
                q, k, v, mask, False, need_weights, average_attn_weights, unbatched, cache=cache
            )
        s = k.shape[2]
        table = self.distance_embeddings(s).to(q.dtype)  # (H, S, Dh)
        # (q / √Dh) Eᵣᵀ skewed = S_rel / √Dh; the causal mask hides the skew's spill-over
        bias = relative_skew(q / math.sqrt(self.head_dim), table, zero_future=False)  # (B, H, L, S)
        mask = masking.merge(
            key_padding_mask, attn_mask, bias, batch=b, heads=self.num_heads, q_len=length,
            kv_len=s, dtype=bias.dtype,
        )  # the relative bias with the masks added: (B, H, L, S)
        return self._attend(
            q, k, v, mask, True, need_weights, average_attn_weights, unbatched, cache=cache
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", max_distance={self.max_distance}, relative=skewed"
