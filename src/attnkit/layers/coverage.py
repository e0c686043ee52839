"""Additive attention with coverage (See et al. 2017, "Get To The Point").

The decoder at step ``t`` scores every encoder state ``h_i`` with

    e_i^t = vᵀ tanh(W_h h_i + W_s s_t + w_c c_i^t + b),      c^t = Σ_{t' < t} a^{t'}

so a source position that has already received attention (large coverage ``c_i^t``) can be
scored down, which discourages repeating it. ``w_c c_i^t`` is ``W_h``'s formula applied to one
more key feature: with the key ``k_i = [h_i; c_i^t]`` and ``U = [W_h | w_c]``,
``U k_i = W_h h_i + w_c c_i^t``. So the layer appends the coverage to each key and calls
:func:`attnkit.attention` with the existing additive score
``Score("additive", w_q=W_s, w_k=U, v=v, bias=b)``; the values stay ``h_i``. The layer does no
attention math of its own (the ``additive`` kernel computes it blockwise).

One decoding step per call (the coverage depends on every earlier step).

Shape legend: B batch, S source length, Dq decoder state size, Dk encoder state size,
A the width of ``tanh``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit._validate import check_positive_ints
from attnkit.functional import attention
from attnkit.layers.base import AttentionLayer
from attnkit.layers.masking import with_key_lengths
from attnkit.scores import Score


class CoverageAttention(AttentionLayer):
    """Additive attention of one decoder state over encoder states, with a coverage feature.

    Args:
        query_dim: Dq, the decoder state ``s_t``.
        key_dim: Dk, the encoder states ``h_i``.
        hidden_dim: A (default Dk).
        backend: the attention kernel (``"auto"``).

    Parameters (named as in the paper): ``W_h (A, Dk)``, ``W_s (A, Dq)``, ``w_c (A,)``,
    ``b (A,)`` (``b_attn``), ``v (A,)``.
    """

    def __init__(
        self, query_dim: int, key_dim: int, hidden_dim: int | None = None, *, backend: str = "auto"
    ) -> None:
        super().__init__()
        hidden = key_dim if hidden_dim is None else hidden_dim
        check_positive_ints(query_dim=query_dim, key_dim=key_dim, hidden_dim=hidden)

        def param(*shape: int, fan_in: int) -> nn.Parameter:
            bound = fan_in**-0.5
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.W_h = param(hidden, key_dim, fan_in=key_dim)
        self.W_s = param(hidden, query_dim, fan_in=query_dim)
        self.w_c = param(hidden, fan_in=1)
        self.b = nn.Parameter(torch.zeros(hidden))
        self.v = param(hidden, fan_in=hidden)
        self.backend = backend

    def score(self) -> Score:
        """The additive score over keys ``[h_i; c_i]``: ``U = [W_h | w_c]`` is ``(A, Dk + 1)``."""
        w_k = torch.cat([self.W_h, self.w_c.unsqueeze(1)], dim=1)  # (A, Dk + 1)
        return Score("additive", w_q=self.W_s, w_k=w_k, v=self.v, bias=self.b)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        coverage: Tensor,
        *,
        key_lengths: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend from the decoder state to the encoder states.

        Args:
            query: ``s_t (B, Dq)``.
            keys: ``h (B, S, Dk)``, also the values.
            coverage: ``c^t (B, S)``, the sum of the earlier steps' attention (zeros at t=0).
            key_lengths: ``(B,)`` true source lengths (the rest is padding).
            mask: bool ``(B, S)``, True = may attend.

        Returns:
            ``(context (B, Dk), weights a^t (B, S))``; padded positions get weight 0.

        Raises:
            ValueError: shapes that do not fit together.
            TypeError: a non-bool mask.
        """
        self._check(query, keys, coverage, key_lengths, mask)
        b, s, _ = keys.shape
        given = None if mask is None else mask.reshape(b, 1, 1, s)  # (B, 1, 1, S)
        allowed = with_key_lengths(given, key_lengths, s)  # KeyLengths alone: kernels skip padding
        features = torch.cat([keys, coverage.unsqueeze(-1).to(keys.dtype)], dim=-1)  # (B, S, Dk+1)
        context, weights = attention(
            query.reshape(b, 1, 1, -1),  # (B, 1, 1, Dq)
            features.unsqueeze(1),  # (B, 1, S, Dk + 1)
            keys.unsqueeze(1),  # (B, 1, S, Dk)
            score=self.score(),
            mask=allowed,
            return_weights=True,
            backend=self.backend,
        )  # (B, 1, 1, Dk), (B, 1, 1, S)
        self.report(weights)
        return context.reshape(b, -1), weights.reshape(b, s)  # (B, Dk), (B, S)

    @staticmethod
    def _check(
        query: Tensor,
        keys: Tensor,
        coverage: Tensor,
        key_lengths: Tensor | None,
        mask: Tensor | None,
    ) -> None:
        if query.dim() != 2 or keys.dim() != 3 or coverage.dim() != 2:
            raise ValueError(
                f"query must be (B, Dq), keys (B, S, Dk) and coverage (B, S); got query "
                f"{tuple(query.shape)}, keys {tuple(keys.shape)}, coverage {tuple(coverage.shape)}"
            )
        b, s = keys.shape[:2]
        if query.shape[0] != b or coverage.shape != (b, s):
            raise ValueError(
                f"query (B, Dq), keys (B, S, Dk) and coverage (B, S) must agree on B and S; got "
                f"query {tuple(query.shape)}, keys {tuple(keys.shape)}, coverage "
                f"{tuple(coverage.shape)}"
            )
        if key_lengths is not None and key_lengths.shape != (b,):
            raise ValueError(f"key_lengths must be (B,) = ({b},), got {tuple(key_lengths.shape)}")
        if mask is not None:
            if mask.dtype != torch.bool:
                raise TypeError(f"mask must be bool (True = may attend), got {mask.dtype}")
            if mask.shape != (b, s):
                raise ValueError(f"mask must be (B, S) = ({b}, {s}), got {tuple(mask.shape)}")

    def extra_repr(self) -> str:
        a, dk = self.W_h.shape
        return f"query_dim={self.W_s.shape[1]}, key_dim={dk}, hidden_dim={a}"
