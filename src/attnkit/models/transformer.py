"""The Transformer (Vaswani et al. 2017) built from :class:`attnkit.MultiHeadAttention`.

Encoder and decoder layers are pre-norm by default (``norm_first=True``; post-norm, as in the
paper and BERT, with ``norm_first=False``). Positions: ``"sinusoidal"`` or ``"learned"`` added to
the embeddings, or ``"rope"``/``"alibi"`` inside self-attention. The decoder keeps a KV cache per
layer for incremental decoding: a growing one for self-attention (bounded, with an eviction
policy, when :meth:`Seq2SeqTransformer.start` is given a
:class:`~attnkit.layers.kv_cache.CachePolicy`), a static one for the cross-attention over the
encoder's memory.

Shape legend: B batch, S source length, T target length, E model width, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnkit.key_lengths import KeyLengths
from attnkit.layers import CachePolicy, KVCache, MultiHeadAttention
from attnkit.models.seq2seq import DecodingState, Seq2Seq, Special, check_source
from attnkit.positions import sinusoidal

POSITIONS = ("sinusoidal", "learned", "rope", "alibi")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class FeedForward(nn.Module):
    """``Linear -> activation -> dropout -> Linear``: ``(B, L, E) -> (B, L, E)``."""

    def __init__(self, width: int, hidden: int, *, activation: str, dropout: float) -> None:
        super().__init__()
        self.inner = nn.Linear(width, hidden)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.outer = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.outer(self.dropout(self.activation(self.inner(x))))


@dataclass
class LayerSpec:
    """The shape of one Transformer layer."""

    width: int
    heads: int
    ff_dim: int
    kv_heads: int | None = None
    dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = True
    norm_eps: float = 1e-5
    positions: str = "sinusoidal"

    def attention(self, *, self_attention: bool) -> MultiHeadAttention:
        inside = (
            self.positions if self_attention and self.positions in ("rope", "alibi") else "none"
        )
        return MultiHeadAttention(
            self.width,
            self.heads,
            dropout=self.dropout,
            batch_first=True,
            num_kv_heads=self.kv_heads,
            positions=inside,
        )


class EncoderLayer(nn.Module):
    """Self-attention and a feed-forward block, each with a residual connection."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.norm_first = spec.norm_first
        self.self_attn = spec.attention(self_attention=True)
        self.ff = FeedForward(
            spec.width, spec.ff_dim, activation=spec.activation, dropout=spec.dropout
        )
        self.norm1 = nn.LayerNorm(spec.width, eps=spec.norm_eps)
        self.norm2 = nn.LayerNorm(spec.width, eps=spec.norm_eps)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, x: Tensor, padding: Tensor | KeyLengths | None = None) -> Tensor:
        """``x (B, L, E)``; ``padding``: :class:`KeyLengths` (the kernels skip padded blocks) or
        ``(B, L)`` bool, **True = padding** (PyTorch's polarity)."""

        def attend(h: Tensor) -> Tensor:
            return self.self_attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]

        if self.norm_first:
            x = x + self.dropout(attend(self.norm1(x)))
            return x + self.dropout(self.ff(self.norm2(x)))
        x = self.norm1(x + self.dropout(attend(x)))
        return self.norm2(x + self.dropout(self.ff(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention over the memory, and a feed-forward block."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.norm_first = spec.norm_first
        self.self_attn = spec.attention(self_attention=True)
        self.cross_attn = spec.attention(self_attention=False)
        self.ff = FeedForward(
            spec.width, spec.ff_dim, activation=spec.activation, dropout=spec.dropout
        )
        self.norms = nn.ModuleList(nn.LayerNorm(spec.width, eps=spec.norm_eps) for _ in range(3))
        self.dropout = nn.Dropout(spec.dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_padding: Tensor | KeyLengths | None,
        caches: tuple[KVCache, KVCache] | None = None,
    ) -> Tensor:
        """``x (B, T, E)``, ``memory (B, S, E)``, ``memory_padding``: :class:`KeyLengths` or
        ``(B, S)`` bool True = padding; ``caches`` (self, cross) for incremental decoding."""
        self_cache, cross_cache = caches if caches is not None else (None, None)
        blocks = (
            lambda h: self.self_attn(h, h, h, need_weights=False, is_causal=True, cache=self_cache)[
                0
            ],
            lambda h: self.cross_attn(
                h,
                memory,
                memory,
                key_padding_mask=memory_padding,
                need_weights=False,
                cache=cross_cache,
            )[0],
            self.ff,
        )
        for block, norm in zip(blocks, self.norms, strict=True):
            if self.norm_first:
                x = x + self.dropout(block(norm(x)))
            else:
                x = norm(x + self.dropout(block(x)))
        return x


class TransformerEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` (with a final LayerNorm when pre-norm)."""

    def __init__(self, spec: LayerSpec, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(spec) for _ in range(layers))
        self.norm = (
            nn.LayerNorm(spec.width, eps=spec.norm_eps) if spec.norm_first else nn.Identity()
        )

    def forward(self, x: Tensor, padding: Tensor | KeyLengths | None = None) -> Tensor:
        """``x (B, L, E)``; ``padding`` as for :meth:`EncoderLayer.forward`."""
        for layer in self.layers:
            x = layer(x, padding)
        return self.norm(x)


class Embedding(nn.Module):
    """Token embeddings scaled by ``√E`` plus sinusoidal or learned positions (or neither, for
    RoPE/ALiBi, which act inside attention)."""

    def __init__(
        self, vocab: int, width: int, *, positions: str, max_len: int, pad: int, dropout: float
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width, padding_idx=pad)
        # N(0, 1/E) (Vaswani et al. 2017 as fairseq implements it): scaled by √E the inputs
        # have unit variance, and an output layer tied to this table starts with logits of
        # unit scale instead of √E (which made the first loss ~100 nats at width 256).
        nn.init.normal_(self.tokens.weight, std=width**-0.5)
        with torch.no_grad():
            self.tokens.weight[pad].zero_()
        self.scale = math.sqrt(width)
        self.positions = positions
        self.learned = nn.Embedding(max_len, width) if positions == "learned" else None
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor, start: int = 0) -> Tensor:
        """``ids (B, L)`` at positions ``start..start+L-1`` -> ``(B, L, E)``.

        Raises ``ValueError`` past ``max_len`` for learned positions."""
        x = self.tokens(ids) * self.scale
        length = ids.shape[1]
        if self.positions == "sinusoidal":
            x = x + sinusoidal(length, x.shape[-1], start=start, device=ids.device).to(x.dtype)
        elif self.learned is not None:
            if start + length > self.max_len:
                raise ValueError(f"position {start + length - 1} is past max_len={self.max_len}")
            x = x + self.learned(torch.arange(start, start + length, device=ids.device))
        return self.dropout(x)


@dataclass
class TransformerConfig:
    """An encoder–decoder Transformer."""

    src_vocab: int
    tgt_vocab: int
    width: int = 256
    heads: int = 4
    kv_heads: int | None = None
    ff_dim: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = True
    positions: str = "sinusoidal"
    max_len: int = 1024
    tie_output: bool = True
    special: dict[str, int] = field(default_factory=lambda: Special().__dict__.copy())

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {list(POSITIONS)}, got {self.positions!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )

    def layer_spec(self) -> LayerSpec:
        return LayerSpec(
            self.width,
            self.heads,
            self.ff_dim,
            kv_heads=self.kv_heads,
            dropout=self.dropout,
            activation=self.activation,
            norm_first=self.norm_first,
            positions=self.positions,
        )


class TransformerState(DecodingState):
    def __init__(
        self, memory: Tensor, memory_padding: KeyLengths, caches: list[tuple[KVCache, KVCache]]
    ):
        self.memory, self.memory_padding, self.caches = memory, memory_padding, caches
        self.length = 0
        self.attention = None

    def reorder(self, index: Tensor) -> None:
        self.memory = self.memory.index_select(0, index)
        self.memory_padding = KeyLengths(self.memory_padding.lengths.index_select(0, index))
        for self_cache, cross_cache in self.caches:
            self_cache.reorder(index)
            cross_cache.reorder(index)
        if self.attention is not None:
            self.attention = self.attention.index_select(0, index)


class Seq2SeqTransformer(Seq2Seq):
    """Encoder–decoder Transformer with incremental (KV-cached) decoding."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.special = Special(**config.special)
        spec = config.layer_spec()
        common = {
            "positions": config.positions,
            "max_len": config.max_len,
            "pad": self.special.pad,
            "dropout": config.dropout,
        }
        self.src_embed = Embedding(config.src_vocab, config.width, **common)
        self.tgt_embed = Embedding(config.tgt_vocab, config.width, **common)
        self.encoder = TransformerEncoder(spec, config.encoder_layers)
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(spec) for _ in range(config.decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(config.width) if config.norm_first else nn.Identity()
        self.output = nn.Linear(config.width, config.tgt_vocab)
        if config.tie_output:
            self.output.weight = self.tgt_embed.tokens.weight

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, KeyLengths]:
        """``(memory (B, S, E), padding)``: the source lengths as :class:`KeyLengths`, so every
        attention over the source skips its padding instead of reading a dense mask."""
        check_source(src, src_lengths)
        padding = KeyLengths(src_lengths)
        return self.encoder(self.src_embed(src), padding), padding

    def _decode(self, x: Tensor, memory: Tensor, padding: KeyLengths, caches=None) -> Tensor:
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, memory, padding, None if caches is None else caches[i])
        return self.output(self.decoder_norm(x))

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        memory, padding = self.encode(src, src_lengths)
        return self._decode(self.tgt_embed(tgt_in), memory, padding)  # (B, T, V)

    def start(
        self, src: Tensor, src_lengths: Tensor, *, cache: CachePolicy | None = None
    ) -> TransformerState:
        """Encode the source; the decoder's self-attention caches follow ``cache`` (default
        unbounded), the cross-attention ones hold the memory."""
        memory, padding = self.encode(src, src_lengths)
        policy = CachePolicy() if cache is None else cache
        caches = [(policy.new(), KVCache(static=True)) for _ in self.decoder_layers]
        return TransformerState(memory, padding, caches)

    def step(self, state: TransformerState, tokens: Tensor) -> tuple[Tensor, TransformerState]:
        x = self.tgt_embed(tokens.unsqueeze(1), start=state.length)  # (B, 1, E)
        logits = self._decode(x, state.memory, state.memory_padding, state.caches)
        state.length += 1
        return logits[:, 0], state  # (B, V)
