"""Multi-head attention (Vaswani et al. 2017) with grouped/multi-query heads, RoPE/ALiBi and a
KV cache; a drop-in replacement for ``torch.nn.MultiheadAttention``.

Drop-in means: ``torch.nn.MultiheadAttention``'s constructor signature and defaults
(``batch_first=False``), its parameters under its names and shapes (so each module loads the
other's ``state_dict``), and its answers. attnkit's own options (``num_kv_heads``,
``positions``, ``backend``; ``cache`` in ``forward``) are keyword-only extras. The deliberate
differences, each with its reason, are listed in ``docs/reliability.md``.

The module projects, reshapes and calls :func:`attnkit.attention`; it does no attention math.

Shape legend: B batch, L query length, S key length, E embed dim, H query heads,
G key/value heads, Dh = E / H head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit import statistics
from attnkit._validate import check_positive_ints, check_window
from attnkit.functional import attention
from attnkit.key_lengths import KeyLengths
from attnkit.layers import masking
from attnkit.layers.base import AttentionLayer
from attnkit.layers.kv_cache import KVCache
from attnkit.positions import NoPositions, scheme
from attnkit.torch_inputs import refuse_nested

_FROM_TORCH_ENCODER = (
    ". torch.nn.TransformerEncoder makes nested tensors of padded batches in eval mode when it "
    "was built around torch's own attention: build it after swapping in this module, or with "
    "enable_nested_tensor=False"
)


class MultiHeadAttention(AttentionLayer):
    """Multi-head attention; ``torch.nn.MultiheadAttention`` with the same arguments.

    Args:
        embed_dim: E, the query (and output) feature size.
        num_heads: H, the number of query heads; must divide E.
        dropout: dropout on the attention weights while training.
        bias: biases in the input and output projections.
        add_bias_kv, add_zero_attn: PyTorch's options; not implemented, so only ``False``.
        kdim, vdim: key/value feature sizes (default E).
        batch_first: inputs are ``(B, L, E)``; default ``False``: ``(L, B, E)``, as in PyTorch.
        device, dtype: of the parameters.
        num_kv_heads: G, key/value heads (default H). ``G < H`` is grouped-query attention
            (Ainslie et al. 2023), ``G = 1`` multi-query; G must divide H.
        positions: ``"none"``, ``"rope"``, ``"alibi"`` or a scheme from :mod:`attnkit.positions`.
        window: ``(left, right)``: each query sees only the keys ``left`` before to ``right``
            after its position (local attention; with ``is_causal``, ``right`` is cut to 0).
        backend: the kernel for :func:`attnkit.attention` (``"auto"`` by default).

    Parameters (PyTorch's names): ``in_proj_weight (3E, E)`` when the query, key and value
    projections have one shape (``kdim = vdim = E`` and ``G = H``), otherwise
    ``q_proj_weight (E, E)``, ``k_proj_weight (G·Dh, kdim)``, ``v_proj_weight (G·Dh, vdim)``;
    ``in_proj_bias (E + 2·G·Dh)``; ``out_proj`` (``Linear(E, E)``).

    Raises:
        ValueError: E not divisible by H, H not divisible by G, a non-positive size, a bad
            ``window``, ``add_bias_kv``/``add_zero_attn``.
    """

    # torch.nn.TransformerEncoderLayer (and TransformerEncoder) replace self_attn's forward by
    # PyTorch's fused kernel, reading in_proj_weight directly, only when this flag is True.
    # attnkit's module always computes its own attention (its backends, positions, recording),
    # so it answers False in every mode; whether the projection is packed is told by
    # `in_proj_weight is not None`.
    _qkv_same_embed_dim = False

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        num_kv_heads: int | None = None,
        positions: str | NoPositions | None = "none",
        window: tuple[int, int] | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        kdim = embed_dim if kdim is None else kdim
        vdim = embed_dim if vdim is None else vdim
        check_positive_ints(
            embed_dim=embed_dim, num_heads=num_heads, num_kv_heads=num_kv_heads, kdim=kdim,
            vdim=vdim,
        )
        if embed_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if add_bias_kv or add_zero_attn:
            raise ValueError(
                "add_bias_kv and add_zero_attn are not supported by attnkit.MultiHeadAttention "
                f"(got add_bias_kv={add_bias_kv}, add_zero_attn={add_zero_attn})"
            )
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.kdim, self.vdim = kdim, vdim
        self.dropout, self.batch_first, self.backend = dropout, batch_first, backend
        self.bias_k = self.bias_v = None  # PyTorch's attributes, for code that reads them
        self.add_zero_attn = False
        self.positions = scheme(positions)
        self.window = check_window(window)
        kv_width = num_kv_heads * self.head_dim
        self._widths = (embed_dim, kv_width, kv_width)
        factory = {"device": device, "dtype": dtype}
        if kdim == vdim == embed_dim and num_kv_heads == num_heads:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(kv_width, kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(kv_width, vdim, **factory))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(sum(self._widths), **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self._reset_parameters()
        self.register_load_state_dict_pre_hook(_from_separate_projections)

    def _reset_parameters(self) -> None:
        """PyTorch's initialisation: Xavier-uniform projections (the packed one as a whole),
        zero biases, ``Linear``'s default for ``out_proj.weight``."""
        for weight in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight,
                       self.v_proj_weight):
            if weight is not None:
                nn.init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        key_padding_mask: Tensor | KeyLengths | None = None,
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
            query: ``(L, B, E)``, or ``(B, L, E)`` if ``batch_first``; ``(L, E)`` unbatched.
            key, value: ``(S, B, kdim)``, ``(S, B, vdim)`` (batch first likewise); default
                ``query`` (self-attention).
            key_padding_mask: ``(B, S)`` (``(S,)`` unbatched); bool **True = padding**
                (PyTorch's polarity), or float added to the scores; or :class:`KeyLengths`
                (keys ``j >= lengths[b]`` are padding), which reaches the kernels as structure
                (padded key blocks are skipped, no dense mask is built).
            need_weights: also return the attention weights (before dropout: see
                ``docs/reliability.md``).
            attn_mask: ``(L, S)`` or ``(B·H, L, S)``; bool **True = not allowed** (PyTorch's
                polarity), or float added to the scores.
            average_attn_weights: average the returned weights over heads ``(B, L, S)``;
                otherwise per head ``(B, H, L, S)``.
            is_causal: with ``attn_mask``, PyTorch's hint that the mask is causal: the mask is
                what counts (when it is exactly the square causal mask, it is passed on as
                ``causal=True``). Without one (PyTorch raises there), hide future keys,
                bottom-right aligned when ``L != S`` (with a cache, the new queries are the
                last ``L`` positions).
            cache: a :class:`KVCache` for incremental decoding. A growing cache appends this
                call's keys/values; a static one projects ``key``/``value`` once and reuses them.
                Masks then cover all cached keys. Once a bounded cache has evicted, its slots
                are no longer in position order: causality and ALiBi then follow each slot's
                original position, and ``key_padding_mask``/``attn_mask`` are refused.

        Returns:
            ``(output, weights)``: output like ``query``; weights or ``None``.

        Raises:
            TypeError: a nested tensor; a mask neither bool nor float (PyTorch refuses those
                too), or a tensor subclass such as ``CausalBias``.
            ValueError: inputs of the wrong rank or size, masks that do not fit, masks or a
                ``window`` with a cache that has evicted.
        """
        refuse_nested(
            _FROM_TORCH_ENCODER, query=query, key=key, value=value,
            key_padding_mask=key_padding_mask, attn_mask=attn_mask,
        )
        key = query if key is None else key
        value = key if value is None else value
        unbatched = isinstance(query, Tensor) and query.dim() == 2
        x = self._batch_first(query, "query")  # (B, L, E)
        k_in = x if key is query else self._batch_first(key, "key")  # (B, S, kdim)
        v_in = x if value is query else k_in if value is key else self._batch_first(value, "value")
        b, length, width = x.shape
        if width != self.embed_dim:
            raise ValueError(
                f"query must have {self.embed_dim} features, got shape {tuple(query.shape)}"
            )
        past = cache.seen if cache is not None and not cache.static else 0
        if cache is not None and cache.static and self.positions.name == "rope":
            raise ValueError("positions='rope' rotates self-attention; use a growing KVCache")
        if cache is not None and cache.static and cache.filled:
            q = self._project(x)[0]  # (B, H, L, Dh)
            k, v = cache.keys, cache.values  # (B, G, S, Dh)
        else:
            self._check_kv(x, k_in, v_in)
            q, k, v = self._project(x, k_in, v_in)  # (B, H, L, Dh), (B, G, S_new, Dh) twice
            q, k = self.positions.rotate(q, k, past, past)
            if cache is not None:
                k, v = cache.append(k, v)  # (B, G, S, Dh)
        s = k.shape[2]
        if cache is not None and cache.evicted:  # slots no longer follow positions
            mask = None  # one new query sees every held key: no mask without a bias
            if self.positions.has_bias or (is_causal and length > 1):
                distances = self._cache_distances(cache, length, key_padding_mask, attn_mask)
                bias = self.positions.bias_at(distances)  # (B, H, L, S) or None
                mask = evicted_mask(distances, bias, is_causal, q.dtype)
            else:
                self._refuse_with_evicted(cache, key_padding_mask, attn_mask)
            return self._attend(
                q, k, v, mask, False, need_weights, average_attn_weights, unbatched, cache=cache
            )
        causal = is_causal and attn_mask is None  # PyTorch: with a mask, is_causal is a hint
        if is_causal and attn_mask is not None:
            masking.check_torch_mask("attn_mask", attn_mask)
            if masking.is_square_causal(attn_mask, length, s):  # the hint holds: structure
                attn_mask, causal = None, True
        alibi = self.positions.bias(self.num_heads, length, s, x.device)  # (H, L, S) or None
        mask = masking.merge(
            key_padding_mask, attn_mask, alibi, batch=b, heads=self.num_heads, q_len=length,
            kv_len=s, dtype=q.dtype,
        )
        return self._attend(
            q, k, v, mask, causal, need_weights, average_attn_weights, unbatched, cache=cache
        )

    # -- helpers --------------------------------------------------------------------------------

    def _project(
        self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``q (B, H, L, Dh)`` from ``query (B, L, E)``, and ``k, v (B, G, S, Dh)`` from
        ``key``/``value (B, S, kdim|vdim)`` when given (self-attention: one matmul)."""
        packed = self.in_proj_weight
        if key is query and value is query and packed is not None:
            q, k, v = F.linear(query, packed, self.in_proj_bias).split_with_sizes(self._widths, -1)
        else:
            if packed is not None:
                weights = packed.split(self._widths)
            else:
                weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
            biases = (
                self.in_proj_bias.split(self._widths)
                if self.in_proj_bias is not None
                else (None, None, None)
            )
            q, k, v = (
                None if x is None else F.linear(x, w, bias)
                for x, w, bias in zip((query, key, value), weights, biases, strict=True)
            )
        return (
            self._heads(q, self.num_heads),
            None if k is None else self._heads(k, self.num_kv_heads),
            None if v is None else self._heads(v, self.num_kv_heads),
        )

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | KeyLengths | None,
        causal: bool,
        need_weights: bool,
        average_attn_weights: bool,
        unbatched: bool,
        *,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """:func:`attnkit.attention` of ``q (B, H, L, Dh)`` over ``k, v (B, G, S, Dh)``, the
        output projection, the layout of the input, and the weights as asked; a ``cache``
        that tracks attention (H2O) observes what each held key received."""
        b, _, length, _ = q.shape
        track = cache is not None and cache.tracks_attention
        wanted = {w for w in (need_weights, self.recorded_weights, track and "key_totals") if w}
        # one request serves them all: the summary they share, else the full weights
        ask: statistics.ReturnWeights = wanted.pop() if len(wanted) == 1 else bool(wanted)
        want_weights = ask is True
        result = attention(
            q,
            k,
            v,
            mask=mask,
            causal=causal,
            window=self.window,
            dropout_p=self.dropout if self.training else 0.0,
            return_weights=ask,
            backend=self.backend,
        )
        out, stat = result if ask is not False else (result, None)  # (B, H, L, Dh)
        weights = stat if want_weights else None
        if track:
            assert cache is not None and stat is not None
            cache.observe(statistics.reduce(stat, "key_totals") if want_weights else stat)
        if self.recording:
            self.report(stat)
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

    def _cache_distances(
        self,
        cache: KVCache,
        length: int,
        key_padding_mask: Tensor | KeyLengths | None,
        attn_mask: Tensor | None,
    ) -> Tensor:
        """``(B, H, L, S)`` distances from the ``L`` new queries to the slots of a cache that
        has evicted (see :meth:`_refuse_with_evicted` for what is refused)."""
        self._refuse_with_evicted(cache, key_padding_mask, attn_mask)
        distances = cache.distances(length)  # (B, G, L, S)
        return distances.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)

    def _refuse_with_evicted(
        self, cache: KVCache, key_padding_mask: object, attn_mask: object
    ) -> None:
        """Raise ``ValueError`` for masks and a ``window`` with a cache that has evicted: they
        would index its slots, which no longer follow positions."""
        if key_padding_mask is not None or attn_mask is not None or self.window is not None:
            raise ValueError(
                f"key_padding_mask/attn_mask/window cannot be used once {cache!r} has evicted: "
                "its slots no longer follow positions (policy='window' keeps a window)"
            )

    def _batch_first(self, x: Tensor, name: str) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
        self._check_like_parameters(x, name)
        if x.dim() == 2:
            return x.unsqueeze(0)  # (1, L, E)
        if x.dim() != 3:
            layout = "(batch, length, features)" if self.batch_first else "(length, batch, ...)"
            raise ValueError(
                f"{name} must be {layout} or unbatched (length, features), got shape "
                f"{tuple(x.shape)}"
            )
        return x if self.batch_first else x.transpose(0, 1)  # (B, L, E)

    def _check_like_parameters(self, x: Tensor, name: str) -> None:
        """Raise where the projections would fail inside ``F.linear`` with torch's message: a
        non-float ``x`` (``TypeError``), a float ``x`` of another dtype than the weights outside
        autocast (``TypeError``), ``x`` on another device (``ValueError``)."""
        weight = self.out_proj.weight
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        if x.device != weight.device:
            here, there = str(x.device), str(weight.device)
            raise ValueError(
                f"{name} is on {here} but the module's parameters are on {there}; move one of "
                f"them (module.to({here!r}) or {name}.to({there!r}))"
            )
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"{name} is {x.dtype} but the module's parameters are {weight.dtype}; convert one "
                f"of them (module.to({x.dtype}) or {name}.to({weight.dtype}))"
            )

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

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """An attnkit module computing exactly what ``module`` computes: same configuration,
        its ``state_dict`` loaded, same train/eval mode.

        Raises:
            TypeError: ``module`` is not a ``torch.nn.MultiheadAttention``.
            ValueError: ``add_bias_kv`` or ``add_zero_attn``, which attnkit does not implement.
        """
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(
                f"from_torch expects torch.nn.MultiheadAttention, got {type(module).__name__}"
            )
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("from_torch: add_bias_kv and add_zero_attn are not supported")
        reference = module.out_proj.weight
        ours = cls(
            module.embed_dim,
            module.num_heads,
            module.dropout,
            module.in_proj_bias is not None,
            kdim=module.kdim,
            vdim=module.vdim,
            batch_first=module.batch_first,
            device=reference.device,
            dtype=reference.dtype,
        )
        ours.load_state_dict(module.state_dict())
        return ours.train(module.training)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_kv_heads={self.num_kv_heads}, dropout={self.dropout}, "
            f"batch_first={self.batch_first}, positions={self.positions.name!r}, "
            f"window={self.window}, backend={self.backend!r}"
        )


def evicted_mask(
    distances: Tensor, bias: Tensor | None, causal: bool, dtype: torch.dtype
) -> Tensor | None:
    """The mask over the slots of a cache that has evicted: ``bias (B, H, L, S)`` (or none)
    with, when ``causal``, the keys after each query (``distances < 0``) hidden. One new query
    sees every held key (all are at or before it), so it needs no causal mask."""
    hidden = distances < 0 if causal and distances.shape[2] > 1 else None  # (B, H, L, S)
    if bias is None:
        return None if hidden is None else ~hidden
    bias = bias.to(dtype)
    return bias if hidden is None else bias.masked_fill(hidden, float("-inf"))


def _from_separate_projections(
    module: MultiHeadAttention, state_dict: dict, prefix: str, *_: object
) -> None:
    """Load state dicts saved before the module took PyTorch's parameter layout: attnkit then
    held three ``Linear``s, ``q_proj``/``k_proj``/``v_proj`` (``weight (out, in)``, ``bias``).
    Their weights become ``in_proj_weight`` (stacked) or ``q/k/v_proj_weight``, their biases
    ``in_proj_bias``, so runs trained with earlier attnkit versions keep loading."""
    names = [f"{prefix}{p}_proj.weight" for p in "qkv"]
    if not all(name in state_dict for name in names):
        return
    weights = [state_dict.pop(name) for name in names]
    if module.in_proj_weight is not None:
        state_dict[f"{prefix}in_proj_weight"] = torch.cat(weights)  # (3E, E)
    else:
        for p, weight in zip("qkv", weights, strict=True):
            state_dict[f"{prefix}{p}_proj_weight"] = weight
    biases = [state_dict.pop(f"{prefix}{p}_proj.bias", None) for p in "qkv"]
    if all(b is not None for b in biases):
        state_dict[f"{prefix}in_proj_bias"] = torch.cat(biases)  # (E + 2·G·Dh,)
