"""A small decoder-only Transformer built from attnkit layers, for the KV-cache benchmark.

Pre-norm blocks of causal self-attention (:class:`attnkit.layers.MultiHeadAttention`) and a
feed-forward network, learned absolute positions, tied input/output embedding. Generation is
greedy, either incrementally through one :class:`attnkit.layers.KVCache` per layer (each step
feeds one token) or, the baseline, by recomputing the whole prefix at every step.

Shape legend: B batch, T tokens so far, E model width, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.layers import KVCache, MultiHeadAttention


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = MultiHeadAttention(width, heads)
        self.ff = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: Tensor, cache: KVCache | None) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, need_weights=False, is_causal=True, cache=cache)[0]  # (B, T, E)
        return x + self.ff(self.norm2(x))


class TinyDecoder(nn.Module):
    """``layers`` pre-norm decoder blocks over a vocabulary of ``vocab`` tokens.

    Raises:
        ValueError: non-positive sizes (from the layers).
    """

    def __init__(
        self, *, vocab: int = 1000, width: int = 256, heads: int = 4, hidden: int = 1024,
        layers: int = 4, max_len: int = 2048,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(max_len, width)
        self.blocks = nn.ModuleList(_Block(width, heads, hidden) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.max_len = max_len

    def forward(self, tokens: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """Logits ``(B, T_new, V)`` for ``tokens (B, T_new)``, which follow what ``caches`` hold."""
        past = len(caches[0]) if caches is not None else 0
        positions = torch.arange(past, past + tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.position(positions)  # (B, T_new, E)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.norm(x) @ self.embed.weight.T  # (B, T_new, V)


@torch.no_grad()
def generate_cached(model: TinyDecoder, prompt: Tensor, steps: int) -> Tensor:
    """Greedy continuation of ``prompt (B, T0)`` by ``steps`` tokens, one token per step
    through a KV cache per layer: ``(B, T0 + steps)``."""
    caches = [KVCache() for _ in model.blocks]
    tokens = prompt
    logits = model(prompt, caches)[:, -1]  # (B, V)
    for step in range(steps):
        nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        tokens = torch.cat([tokens, nxt], dim=1)
        if step + 1 < steps:  # as many model calls as the full recomputation makes
            logits = model(nxt, caches)[:, -1]
    return tokens


@torch.no_grad()
def generate_full(model: TinyDecoder, prompt: Tensor, steps: int) -> Tensor:
    """The same greedy continuation, recomputing the full prefix at every step."""
    tokens = prompt
    for _ in range(steps):
        nxt = model(tokens)[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens
