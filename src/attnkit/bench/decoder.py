"""Greedy generation with and without a KV cache, for the KV-cache benchmark.

The model is attnkit's decoder-only Transformer (:class:`attnkit.models.MusicTransformer`,
pre-norm blocks of causal :class:`attnkit.layers.MultiHeadAttention`, one
:class:`attnkit.layers.KVCache` per layer when generating step by step); nothing in it is
specific to music but its name.

Shape legend: B batch, T tokens so far, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.models import MusicTransformer, MusicTransformerConfig


def decoder(
    *, vocab: int = 1000, width: int = 256, heads: int = 4, hidden: int = 1024,
    layers: int = 4, max_len: int = 2048,
) -> MusicTransformer:
    """A decoder-only Transformer with learned positions, in eval mode.

    Raises:
        ValueError: sizes the model refuses (see :class:`attnkit.models.MusicTransformerConfig`).
    """
    config = MusicTransformerConfig(
        vocab_size=vocab, width=width, heads=heads, layers=layers, ff_dim=hidden,
        positions="learned", max_len=max_len, dropout=0.0,
    )
    return MusicTransformer(config).eval()


@torch.no_grad()
def generate_cached(model: MusicTransformer, prompt: Tensor, steps: int) -> Tensor:
    """Greedy continuation of ``prompt (B, T0)`` by ``steps`` tokens, one token per step
    through the model's KV caches: ``(B, T0 + steps)``."""
    state = model.start(prompt.shape[0])
    tokens = prompt
    logits = model.step(state, prompt)[:, -1]  # (B, V)
    for step in range(steps):
        nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        tokens = torch.cat([tokens, nxt], dim=1)
        if step + 1 < steps:  # as many model calls as the full recomputation makes
            logits = model.step(state, nxt)[:, -1]
    return tokens


@torch.no_grad()
def generate_full(model: MusicTransformer, prompt: Tensor, steps: int) -> Tensor:
    """The same greedy continuation, recomputing the full prefix at every step."""
    tokens = prompt
    for _ in range(steps):
        nxt = model(tokens)[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens
