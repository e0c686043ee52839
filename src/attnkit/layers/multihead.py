"""Multi-head attention (Vaswani et al. 2017) with grouped/multi-query heads, RoPE/ALiBi and a
KV cache; a drop-in replacement for ``torch.nn.MultiheadAttention``.

The module projects, reshapes and calls :func:`attnkit.attention`; it does no attention math.

Shape legend: B batch, L query length, S key length, E embed dim, H query heads,
G key/value heads, Dh = E / H head dim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit import masks
from attnkit.functional import attention
from attnkit.layers.base import AttentionLayer
from attnkit.layers.kv_cache import KVCache
from attnkit.positions import NoPositions, scheme


class MultiHeadAttention(AttentionLayer):
    """Multi-head attention over ``(batch, length, features)`` inputs.

    Args:
        embed_dim: E, the query (and output) feature size.
        num_heads: H, the number of query heads; must divide E.
        num_kv_heads: G, key/value heads (default H). ``G < H`` is grouped-query attention
            (Ainslie et al. 2023), ``G = 1`` multi-query; G must divide H.
        dropout: dropout on the attention weights while training.
        bias: biases in the four projections.
        kdim, vdim: key/value feature sizes (default E).
        batch_first: inputs are ``(B, L, E)`` (default, attnkit's layout) or ``(L, B, E)``.
        positions: ``"none"``, ``"rope"``, ``"alibi"`` or a scheme from :mod:`attnkit.positions`.
        backend: the kernel for :func:`attnkit.attention` (``"auto"`` by default).

    Raises:
        ValueError: E not divisible by H, H not divisible by G, a non-positive size.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = True,
        positions: str | NoPositions | None = "none",
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        for name, value in (
            ("embed_dim", embed_dim),
            ("num_heads", num_heads),
            ("num_kv_heads", num_kv_heads),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.dropout, self.batch_first, self.backend = dropout, batch_first, backend
        self.positions = scheme(positions)
        kv_width = num_kv_heads * self.head_dim
        factory = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(self.kdim, kv_width, bias=bias, **factory)
        self.v_proj = nn.Linear(self.vdim, kv_width, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        *,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value``; the arguments of
        ``torch.nn.MultiheadAttention.forward`` with the same meaning.

        Args:
            query: ``(B, L, E)`` (``(L, B, E)`` if not ``batch_first``; ``(L, E)`` unbatched).
            key, value: ``(B, S, kdim)``, ``(B, S, vdim)``; default ``query`` (self-attention).
            key_padding_mask: ``(B, S)``; bool **True = padding** (PyTorch's polarity), or float
                added to the scores.
            need_weights: also return the attention weights.
            attn_mask: ``(L, S)`` or ``(B·H, L, S)``; bool **True = not allowed** (PyTorch's
                polarity), or float added to the scores.
            average_attn_weights: average the returned weights over heads ``(B, L, S)``;
                otherwise per head ``(B, H, L, S)``.
            is_causal: hide future keys (bottom-right aligned when ``L != S``; with a cache,
                the new queries are the last ``L`` positions).
            cache: a :class:`KVCache` for incremental decoding. A growing cache appends this
                call's keys/values; a static one projects ``key``/``value`` once and reuses them.
                Masks then cover all cached keys.

        Returns:
            ``(output, weights)``: output like ``query``; weights or ``None``.

        Raises:
            ValueError/TypeError: inputs of the wrong rank or size, masks that do not fit.
        """
        key = query if key is None else key
        value = key if value is None else value
        unbatched = query.dim() == 2
        query, key, value = (
            self._batch_first(x, name)
            for x, name in ((query, "query"), (key, "key"), (value, "value"))
        )
        b, length, _ = query.shape
        if query.shape[-1] != self.embed_dim:
            raise ValueError(
                f"query must have {self.embed_dim} features, got shape {tuple(query.shape)}"
            )
        q = self._heads(self.q_proj(query), self.num_heads)  # (B, H, L, Dh)
        past = len(cache) if cache is not None and not cache.static else 0
        if cache is not None and cache.static and self.positions.name == "rope":
            raise ValueError("positions='rope' rotates self-attention; use a growing KVCache")
        if cache is not None and cache.static and cache.filled:
            k, v = cache.keys, cache.values  # (B, G, S, Dh)
        else:
            self._check_kv(query, key, value)
            k = self._heads(self.k_proj(key), self.num_kv_heads)  # (B, G, S_new, Dh)
            v = self._heads(self.v_proj(value), self.num_kv_heads)  # (B, G, S_new, Dh)
            q, k = self.positions.rotate(q, k, past, past)
            if cache is not None:
                k, v = cache.append(k, v)  # (B, G, S, Dh)
        mask = self._mask(key_padding_mask, attn_mask, b, length, k.shape[2], query.device)
        return self._attend(q, k, v, mask, is_causal, need_weights, average_attn_weights, unbatched)

    # -- helpers --------------------------------------------------------------------------------

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        causal: bool,
        need_weights: bool,
        average_attn_weights: bool,
        unbatched: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """:func:`attnkit.attention` of ``q (B, H, L, Dh)`` over ``k, v (B, G, S, Dh)``, the
        output projection, the layout of the input, and the weights as asked."""
        b, _, length, _ = q.shape
        want_weights = need_weights or self.recording
        result = attention(
            q,
            k,
            v,
            mask=mask,
            causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            return_weights=want_weights,
            backend=self.backend,
        )
        out, weights = result if want_weights else (result, None)  # (B, H, L, Dh)
        self.report(weights)
        out = self.out_proj(out.transpose(1, 2).reshape(b, length, self.embed_dim))  # (B, L, E)
        if not self.batch_first:
            out = out.transpose(0, 1)  # (L, B, E)
        if unbatched:
            out = out.squeeze(1 if not self.batch_first else 0)
        if not need_weights or weights is None:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)  # (B, L, S)
        return out, weights.squeeze(0) if unbatched else weights

    def _batch_first(self, x: Tensor, name: str) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
        if x.dim() == 2:
            return x.unsqueeze(0)  # (1, L, E)
        if x.dim() != 3:
            raise ValueError(
                f"{name} must be (batch, length, features) or unbatched (length, features), "
                f"got shape {tuple(x.shape)}"
            )
        return x if self.batch_first else x.transpose(0, 1)  # (B, L, E)

    def _check_kv(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        for name, x, width in (("key", key, self.kdim), ("value", value, self.vdim)):
            if x.shape[-1] != width:
                raise ValueError(f"{name} must have {width} features, got shape {tuple(x.shape)}")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ValueError(
                f"query, key and value must share the batch size and key/value the length, got "
                f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
            )

    def _heads(self, x: Tensor, heads: int) -> Tensor:
        b, length, _ = x.shape
        return x.reshape(b, length, heads, self.head_dim).transpose(1, 2)  # (B, heads, L, Dh)

    def _mask(
        self,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        b: int,
        length: int,
        s: int,
        device: torch.device,
    ) -> Tensor | None:
        """PyTorch-convention masks and the positional bias as one attnkit mask (B|1, H|1, L, S)."""
        parts: list[Tensor] = []
        if key_padding_mask is not None:
            kpm = key_padding_mask.unsqueeze(0) if key_padding_mask.dim() == 1 else key_padding_mask
            if kpm.shape != (b, s):
                raise ValueError(
                    f"key_padding_mask must be (batch, S) = ({b}, {s}), got "
                    f"{tuple(key_padding_mask.shape)}"
                )
            parts.append(masks.from_torch(kpm).reshape(b, 1, 1, s))  # (B, 1, 1, S)
        if attn_mask is not None:
            if attn_mask.dim() == 2 and attn_mask.shape == (length, s):
                parts.append(masks.from_torch(attn_mask).reshape(1, 1, length, s))  # (1, 1, L, S)
            elif attn_mask.dim() == 3 and attn_mask.shape == (b * self.num_heads, length, s):
                am = masks.from_torch(attn_mask)
                parts.append(am.reshape(b, self.num_heads, length, s))  # (B, H, L, S)
            else:
                raise ValueError(
                    f"attn_mask must be (L, S) = ({length}, {s}) or (batch·heads, L, S) = "
                    f"({b * self.num_heads}, {length}, {s}), got {tuple(attn_mask.shape)}"
                )
        alibi = self.positions.bias(self.num_heads, length, s, device)  # (H, L, S) or None
        if alibi is not None:
            parts.append(alibi.unsqueeze(0))  # (1, H, L, S)
        if not parts:
            return None
        if all(p.dtype == torch.bool for p in parts):
            return masks.combine(*parts)
        total = torch.zeros((), device=device)
        for p in parts:
            total = total + (masks.to_bias(p) if p.dtype == torch.bool else p.float())
        return total

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """An attnkit module computing exactly what ``module`` computes (same weights, copied).

        Raises:
            ValueError: ``add_bias_kv`` or ``add_zero_attn``, which attnkit does not implement.
        """
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(
                f"from_torch expects torch.nn.MultiheadAttention, got {type(module).__name__}"
            )
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("from_torch: add_bias_kv and add_zero_attn are not supported")
        e = module.embed_dim
        reference = module.out_proj.weight
        ours = cls(
            e,
            module.num_heads,
            dropout=module.dropout,
            bias=module.in_proj_bias is not None,
            kdim=module.kdim,
            vdim=module.vdim,
            batch_first=module.batch_first,
            device=reference.device,
            dtype=reference.dtype,
        )
        with torch.no_grad():
            if module._qkv_same_embed_dim:
                wq, wk, wv = module.in_proj_weight.chunk(3)
            else:
                wq, wk, wv = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
            for proj, w in ((ours.q_proj, wq), (ours.k_proj, wk), (ours.v_proj, wv)):
                proj.weight.copy_(w)
            if module.in_proj_bias is not None:
                for proj, bias in zip(
                    (ours.q_proj, ours.k_proj, ours.v_proj),
                    module.in_proj_bias.chunk(3),
                    strict=True,
                ):
                    proj.bias.copy_(bias)
            ours.out_proj.weight.copy_(module.out_proj.weight)
            if module.out_proj.bias is not None:
                ours.out_proj.bias.copy_(module.out_proj.bias)
        ours.train(module.training)
        return ours

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_kv_heads={self.num_kv_heads}, dropout={self.dropout}, "
            f"positions={self.positions.name!r}, backend={self.backend!r}"
        )
