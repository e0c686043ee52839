"""The Transformer translator as two traceable graphs around the model's own ``start`` and
``step``, with every key/value cache an explicit tensor input or output.

- :class:`TranslatorStart` encodes the source and takes the first decoding step from
  ``<bos>``: ``(src, src_lengths) -> (logits, present self-attention keys/values per layer,
  cross-attention keys/values per layer)``.
- :class:`TranslatorStep` takes every later step: ``(tokens, src_lengths, past self-attention
  keys/values, cross-attention keys/values) -> (logits, present self-attention keys/values)``;
  the present keys/values hold one position more than the past ones.

Both run the model's decoder code unchanged; only its caches are :class:`TensorCache`.
Folding the first step into the start graph keeps the cache of every step graph non-empty.

Shape legend: B batch, S source length, P positions decoded so far, G key/value heads,
Dh head dim, V target vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.export import Dim

from attnkit.export.cache import TensorCache
from attnkit.export.graph import Graph
from attnkit.key_lengths import KeyLengths
from attnkit.models.transformer import Seq2SeqTransformer, TransformerState

BATCH = Dim("batch", min=1)


def cache_names(layers: int, self_prefix: str, *, cross: bool) -> list[str]:
    """Layer by layer: ``{self_prefix}self_keys.i``, ``{self_prefix}self_values.i`` and, with
    ``cross``, ``cross_keys.i``, ``cross_values.i`` (``self_prefix`` is ``past_`` for inputs,
    ``present_`` for outputs: a step's ``present_*`` are the next step's ``past_*``)."""
    parts = [f"{self_prefix}self_keys", f"{self_prefix}self_values"]
    parts += ["cross_keys", "cross_values"] if cross else []
    return [f"{part}.{i}" for i in range(layers) for part in parts]


class TranslatorStart(nn.Module):
    """``(src (B, S) int64, src_lengths (B,) int64) -> (logits (B, V), then per layer
    self keys, self values (B, G, 1, Dh), cross keys, cross values (B, G, S, Dh))``."""

    def __init__(self, model: Seq2SeqTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        state = self.model.start(src, src_lengths)
        state.caches = [(TensorCache(), TensorCache(static=True)) for _ in state.caches]
        bos = torch.full_like(src_lengths, self.model.special.bos)  # (B,)
        logits, state = self.model.step(state, bos)  # (B, V)
        return (logits, *_flatten(state.caches, cross=True))


class TranslatorStep(nn.Module):
    """``(tokens (B,), src_lengths (B,), then per layer past self keys, self values
    (B, G, P, Dh), cross keys, cross values (B, G, S, Dh)) -> (logits (B, V), then per layer
    present self keys, self values (B, G, P + 1, Dh))``."""

    def __init__(self, model: Seq2SeqTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, src_lengths: Tensor, *cache: Tensor) -> tuple[Tensor, ...]:
        caches = [
            (TensorCache(*cache[i : i + 2]), TensorCache(*cache[i + 2 : i + 4], static=True))
            for i in range(0, len(cache), 4)
        ]
        # The filled cross-attention caches stand for the memory, which a step never reads.
        state = TransformerState(None, KeyLengths(src_lengths), caches)  # type: ignore[arg-type]
        state.length = caches[0][0].seen
        logits, state = self.model.step(state, tokens)  # (B, V)
        return (logits, *_flatten(state.caches, cross=False))


def _flatten(caches: list[tuple[TensorCache, TensorCache]], *, cross: bool) -> list[Tensor]:
    out = []
    for self_cache, cross_cache in caches:
        out += [self_cache.keys, self_cache.values]
        if cross:
            out += [cross_cache.keys, cross_cache.values]
    return out


def translator_graphs(
    model: Seq2SeqTransformer, *, batch: int = 2, source: int = 5, past: int = 3
) -> dict[str, Graph]:
    """``{"encoder": start graph, "decoder_step": step graph}`` of ``model`` with example
    inputs of the given sizes (any size works once exported; these only trace).

    Raises:
        TypeError: ``model`` is not a :class:`~attnkit.models.Seq2SeqTransformer`.
    """
    if not isinstance(model, Seq2SeqTransformer):
        raise TypeError(
            f"only the Transformer translator exports (Seq2SeqTransformer), got "
            f"{type(model).__name__}"
        )
    model = model.eval()
    layers = len(model.decoder_layers)
    attn = model.decoder_layers[0].self_attn
    weight = next(model.parameters())
    generator = torch.Generator().manual_seed(0)
    first = max(model.special.__dict__.values()) + 1  # the first id of a real token
    src = torch.randint(first, model.config.src_vocab, (batch, source), generator=generator)
    src_lengths = torch.arange(source, source - batch, -1).clamp_min(1)  # (B,) all different
    tokens = torch.randint(first, model.config.tgt_vocab, (batch,), generator=generator)

    def kv(length: int) -> Tensor:
        shape = (batch, attn.num_kv_heads, length, attn.head_dim)  # (B, G, ·, Dh)
        return torch.randn(shape, generator=generator).to(weight)

    # Learned positions end at max_len (the model refuses more); other positions do not.
    limit = model.config.max_len if model.config.positions == "learned" else None
    source_dim = Dim("source_length", min=1, max=limit)
    past_dim = Dim("past_length", min=1, max=None if limit is None else limit - 1)
    kv_axes = {0: BATCH, 2: past_dim}
    memory_axes = {0: BATCH, 2: source_dim}
    start = Graph(
        TranslatorStart(model),
        (src, src_lengths),
        ({0: BATCH, 1: source_dim}, {0: BATCH}),
        ["src", "src_lengths"],
        ["logits", *cache_names(layers, "present_", cross=True)],
    )
    past_cache = [kv(past) if i % 4 < 2 else kv(source) for i in range(4 * layers)]
    step = Graph(
        TranslatorStep(model),
        (tokens, src_lengths, *past_cache),
        (
            {0: BATCH},
            {0: BATCH},
            tuple(kv_axes if i % 4 < 2 else memory_axes for i in range(4 * layers)),  # *cache
        ),
        ["tokens", "src_lengths", *cache_names(layers, "past_", cross=True)],
        ["logits", *cache_names(layers, "present_", cross=False)],
    )
    return {"encoder": start, "decoder_step": step}
