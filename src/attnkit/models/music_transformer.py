"""Event language models for music: the Music Transformer (Huang et al. 2018) and its baselines.

- :class:`MusicTransformer`: a decoder-only Transformer over event ids. With
  ``positions="relative"`` its self-attention is :class:`~attnkit.layers.relative.
  RelativeMultiHeadAttention` (relative positions by skewing, no ``L×L×D`` tensor); with
  ``"sinusoidal"`` or ``"learned"`` it is the same decoder with absolute positions added to the
  embeddings and plain :class:`~attnkit.MultiHeadAttention`; with ``"rope"`` the queries and
  keys are rotated inside attention (nothing added to the embeddings). Nothing in it is
  specific to music: it is attnkit's decoder-only language model.
- :class:`MusicLSTM`: the same embedding and output with an LSTM in place of attention.

Both offer the same interface: ``forward(ids (B, L)) -> logits (B, L, V)`` for training, and
``start(batch) -> state``, ``step(state, ids (B, n)) -> logits (B, n, V)`` for generation (the
Transformer keeps a KV cache per layer, so each step costs one row of attention; a
:class:`~attnkit.layers.kv_cache.CachePolicy` bounds it and says what to evict).

Shape legend: B batch, L events, n new events, E width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnkit._validate import check_positive_fields
from attnkit.checks import check_within
from attnkit.layers import CachePolicy, KVCache, MultiHeadAttention
from attnkit.layers.relative import RelativeMultiHeadAttention
from attnkit.models.transformer import ACTIVATIONS, Embedding, FeedForward

POSITIONS = ("relative", "sinusoidal", "learned", "rope")


def _check_sizes(config: Any, names: tuple[str, ...]) -> None:
    check_positive_fields(config, names)
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout!r}")


@dataclass
class MusicTransformerConfig:
    """A decoder-only Transformer over ``vocab_size`` events.

    Attributes:
        positions: ``"relative"`` (Music Transformer), ``"sinusoidal"``, ``"learned"`` or
            ``"rope"``.
        dropout: on embeddings, residual branches and inside the feed-forward block.
        attention_dropout: on the attention weights (0 by default: on CPU it costs a random
            number per query–key pair).
        max_len: the training window; ``learned`` positions stop there, ``relative`` gives each
            distance below it its own embedding (farther ones share the last).
        backend: the attention kernel (``"auto"``: PyTorch's ``sdpa`` where it serves).

    Raises:
        ValueError: an unknown ``positions``/``activation``, ``heads`` not dividing ``width``,
            a non-positive size.
    """

    vocab_size: int
    width: int = 128
    heads: int = 4
    layers: int = 3
    ff_dim: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation: str = "gelu"
    positions: str = "relative"
    max_len: int = 512
    backend: str = "auto"
    pad: int = 0

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {list(POSITIONS)}, got {self.positions!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )
        _check_sizes(self, ("vocab_size", "width", "heads", "layers", "ff_dim", "max_len"))
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must be in [0, 1), got {self.attention_dropout!r}")
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")


def _init_tied(embedding: nn.Embedding, width: int, pad: int) -> None:
    """N(0, 1/E) for an embedding tied to the output layer: unit-scale logits at the start
    (N(0, 1), PyTorch's default, gives logits of scale √E and a first loss far above log V)."""
    with torch.no_grad():
        nn.init.normal_(embedding.weight, std=width**-0.5)
        embedding.weight[pad].zero_()


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention and feed-forward, each with a residual connection."""

    def __init__(self, config: MusicTransformerConfig) -> None:
        super().__init__()
        self.self_attn: MultiHeadAttention
        if config.positions == "relative":
            self.self_attn = RelativeMultiHeadAttention(
                config.width,
                config.heads,
                max_distance=config.max_len,
                dropout=config.attention_dropout,
                backend=config.backend,
            )
        else:
            self.self_attn = MultiHeadAttention(
                config.width,
                config.heads,
                dropout=config.attention_dropout,
                batch_first=True,
                positions="rope" if config.positions == "rope" else "none",
                backend=config.backend,
            )
        self.ff = FeedForward(
            config.width, config.ff_dim, activation=config.activation, dropout=config.dropout
        )
        self.norm1 = nn.LayerNorm(config.width)
        self.norm2 = nn.LayerNorm(config.width)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """``x (B, n, E)`` -> ``(B, n, E)``; ``cache`` holds the earlier positions."""
        h = self.norm1(x)
        attended = self.self_attn(h, h, h, need_weights=False, is_causal=True, cache=cache)[0]
        x = x + self.dropout(attended)
        return x + self.dropout(self.ff(self.norm2(x)))


@dataclass
class LanguageModelState:
    """What generation carries between steps: the per-layer caches (Transformer) or the
    recurrent state (LSTM), and how many events were fed so far."""

    length: int = 0
    caches: list[KVCache] | None = None
    hidden: tuple[Tensor, Tensor] | None = None


def _check_ids(ids: Tensor, vocab_size: int) -> None:
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
        shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"ids must be integer event ids (batch, length), got {shape}")
    check_within("ids", ids, 0, vocab_size - 1, lambda: (
        f"ids must lie in [0, {vocab_size}), got values {int(ids.min())}..{int(ids.max())}"
    ))


class MusicTransformer(nn.Module):
    """A decoder-only Transformer language model over music events."""

    def __init__(self, config: MusicTransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = Embedding(
            config.vocab_size,
            config.width,
            positions="none" if config.positions in ("relative", "rope") else config.positions,
            max_len=config.max_len,
            pad=config.pad,
            dropout=config.dropout,
        )
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)
        self.output = nn.Linear(config.width, config.vocab_size)
        self.output.weight = self.embed.tokens.weight  # tied input/output embeddings
        _init_tied(self.embed.tokens, config.width, config.pad)

    def _run(self, ids: Tensor, start: int, caches: list[KVCache] | None) -> Tensor:
        _check_ids(ids, self.config.vocab_size)
        x = self.embed(ids, start=start)  # (B, n, E)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.output(self.norm(x))  # (B, n, V)

    def forward(self, ids: Tensor) -> Tensor:
        """``ids (B, L)`` -> next-event logits ``(B, L, V)`` (causal: position ``t`` sees
        ``ids[:, :t+1]``).

        Raises:
            ValueError: ids that are not ``(B, L)`` integers in the vocabulary; a ``learned``
                model past ``max_len``.
        """
        return self._run(ids, 0, None)

    def start(self, batch_size: int = 1, *, cache: CachePolicy | None = None) -> LanguageModelState:
        """A fresh generation state with an empty KV cache per layer, unbounded or as
        ``cache`` says (``max_len`` slots per layer and what to evict)."""
        policy = CachePolicy() if cache is None else cache
        return LanguageModelState(caches=[policy.new() for _ in self.blocks])

    def step(self, state: LanguageModelState, ids: Tensor) -> Tensor:
        """Feed ``ids (B, n)`` after everything in ``state``; returns logits ``(B, n, V)``.
        Use under ``torch.no_grad()`` (the caches are written in place)."""
        logits = self._run(ids, state.length, state.caches)
        state.length += ids.shape[1]
        return logits


@dataclass
class MusicLSTMConfig:
    """An LSTM language model of the same width and depth as a :class:`MusicTransformer`."""

    vocab_size: int
    width: int = 128
    layers: int = 3
    dropout: float = 0.1
    pad: int = 0

    def __post_init__(self) -> None:
        _check_sizes(self, ("vocab_size", "width", "layers"))


class MusicLSTM(nn.Module):
    """Embedding -> LSTM -> output: next-event prediction without attention."""

    def __init__(self, config: MusicLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.width, padding_idx=config.pad)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.width,
            config.width,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.output = nn.Linear(config.width, config.vocab_size)
        self.output.weight = self.embed.weight
        _init_tied(self.embed, config.width, config.pad)

    def _run(self, ids: Tensor, hidden: tuple[Tensor, Tensor] | None):
        _check_ids(ids, self.config.vocab_size)
        x = self.dropout(self.embed(ids))  # (B, n, E)
        out, hidden = self.lstm(x, hidden)  # (B, n, E)
        return self.output(self.dropout(out)), hidden  # (B, n, V)

    def forward(self, ids: Tensor) -> Tensor:
        """``ids (B, L)`` -> next-event logits ``(B, L, V)``."""
        return self._run(ids, None)[0]

    def start(self, batch_size: int = 1, *, cache: CachePolicy | None = None) -> LanguageModelState:
        """A fresh state. Raises ``ValueError`` for a ``cache`` policy: an LSTM has no cache."""
        if cache is not None:
            raise ValueError("cache: an LSTM keeps no KV cache; only a transformer has one")
        return LanguageModelState()

    def step(self, state: LanguageModelState, ids: Tensor) -> Tensor:
        """Feed ``ids (B, n)``; returns logits ``(B, n, V)``."""
        logits, state.hidden = self._run(ids, state.hidden)
        state.length += ids.shape[1]
        return logits


#: model kind (as on the command line) -> (config class, model class)
MUSIC_MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "transformer": (MusicTransformerConfig, MusicTransformer),
    "lstm": (MusicLSTMConfig, MusicLSTM),
}


def build_music_model(kind: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild a music model from its kind and configuration (as saved in a checkpoint).

    Raises:
        ValueError: an unknown kind or configuration field.
    """
    if kind not in MUSIC_MODELS:
        raise ValueError(f"model must be one of {sorted(MUSIC_MODELS)}, got {kind!r}")
    config_class, model_class = MUSIC_MODELS[kind]
    try:
        return model_class(config_class(**config))
    except TypeError as error:
        raise ValueError(f"bad configuration for music model {kind!r}: {error}") from None
