"""Bahdanau et al. 2015's additive attention: ``e_j = vᵀ tanh(W s + U h_j)``."""

from __future__ import annotations

from attnkit.layers.single import ScoreParameters, SingleHeadAttention


class AdditiveAttention(SingleHeadAttention):
    """Additive (Bahdanau) attention of a decoder state over encoder states.

    ``forward(query (B, Dq) | (B, T, Dq), keys (B, S, Dk), values=None, *, mask, key_lengths)``
    returns ``(context, weights)``; see :meth:`SingleHeadAttention.forward`.

    Args:
        query_dim: Dq, the decoder state size (RNNsearch feeds the *previous* state).
        key_dim: Dk, the encoder state size.
        hidden_dim: A, the width of ``tanh`` (default Dk).
    """

    def __init__(
        self, query_dim: int, key_dim: int, hidden_dim: int | None = None, *, backend: str = "auto"
    ) -> None:
        super().__init__(
            ScoreParameters("additive", query_dim, key_dim, hidden_dim=hidden_dim), backend=backend
        )
