"""Single-head attention for encoder–decoder models: a query (usually a decoder state) against
the encoder's states. Shared by :class:`AdditiveAttention`, :class:`LuongAttention` and
:class:`HardAttention`.

:class:`ScoreParameters` owns the learnable parameters of one score function and hands out the
:class:`attnkit.Score` that :func:`attnkit.attention` evaluates; the layers only reshape.

Shape legend: B batch, T query steps, S source (key) length, Dq/Dk/Dv query/key/value sizes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attnkit import masks
from attnkit.functional import attention
from attnkit.key_lengths import KeyLengths
from attnkit.layers.base import AttentionLayer
from attnkit.layers.masking import with_key_lengths
from attnkit.normalizers import Normalizer
from attnkit.scores import Score

SCORE_NAMES = ("dot", "scaled_dot", "general", "additive", "concat", "cosine", "location")


class ScoreParameters(nn.Module):
    """The parameters of one score, as the formulas name them.

    ``general``: ``weight (Dq, Dk)``; ``additive``: ``W (A, Dq)``, ``U (A, Dk)``, ``v (A,)``;
    ``concat``: ``W (A, Dq + Dk)``, ``v (A,)``; ``location``: ``W (max_keys, Dq)``;
    ``dot``/``scaled_dot``/``cosine``: none (``Dq`` must equal ``Dk``).

    Raises:
        ValueError: an unknown score, ``Dq != Dk`` for a parameter-free score, ``location``
            without ``max_keys``.
    """

    def __init__(
        self,
        name: str,
        query_dim: int,
        key_dim: int,
        *,
        hidden_dim: int | None = None,
        max_keys: int | None = None,
    ) -> None:
        super().__init__()
        if name not in SCORE_NAMES:
            raise ValueError(f"score must be one of {list(SCORE_NAMES)}, got {name!r}")
        if name in ("dot", "scaled_dot", "cosine") and query_dim != key_dim:
            raise ValueError(
                f"score {name!r} needs query_dim == key_dim, got {query_dim} and {key_dim}"
            )
        self.name = name
        hidden = hidden_dim or key_dim

        def param(*shape: int, fan_in: int) -> nn.Parameter:
            bound = fan_in**-0.5
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        if name == "general":
            self.weight = param(query_dim, key_dim, fan_in=key_dim)
        elif name == "additive":
            self.W = param(hidden, query_dim, fan_in=query_dim)
            self.U = param(hidden, key_dim, fan_in=key_dim)
            self.v = param(hidden, fan_in=hidden)
        elif name == "concat":
            self.W = param(hidden, query_dim + key_dim, fan_in=query_dim + key_dim)
            self.v = param(hidden, fan_in=hidden)
        elif name == "location":
            if max_keys is None:
                raise ValueError("score 'location' needs max_keys (the longest source length)")
            self.W = param(max_keys, query_dim, fan_in=query_dim)

    def spec(self) -> str | Score:
        """The score for :func:`attnkit.attention`, bound to this module's parameters."""
        if self.name == "general":
            return Score("general", weight=self.weight)
        if self.name == "additive":
            return Score("additive", w_q=self.W, w_k=self.U, v=self.v)
        if self.name == "concat":
            return Score("concat", weight=self.W, v=self.v)
        if self.name == "location":
            return Score("location", weight=self.W)
        return self.name

    def extra_repr(self) -> str:
        return f"score={self.name!r}"


class SingleHeadAttention(AttentionLayer):
    """Attention of one head from queries to source states; returns ``(context, weights)``.

    Subclasses choose the score (a :class:`ScoreParameters`) and may override
    :meth:`normalizer` and :meth:`extra_mask`.
    """

    def __init__(self, scorer: ScoreParameters, *, backend: str = "auto") -> None:
        super().__init__()
        self.scorer = scorer
        self.backend = backend

    def normalizer(
        self, query: Tensor, keys: Tensor, key_lengths: Tensor | None, **kwargs: Any
    ) -> Any:
        """The normalizer for this call (``"softmax"`` here)."""
        return "softmax"

    def extra_mask(
        self, query: Tensor, keys: Tensor, key_lengths: Tensor | None, **kwargs: Any
    ) -> Tensor | None:
        """An extra bool mask ``(B|1, 1, T, S)`` (local windows), or ``None``."""
        return None

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        key_lengths: Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor]:
        """Attend from ``query`` to ``keys`` and sum ``values``.

        Args:
            query: ``(B, Dq)`` for one decoding step, or ``(B, T, Dq)``.
            keys: ``(B, S, Dk)`` source states.
            values: ``(B, S, Dv)``; default ``keys``.
            mask: bool, True = may attend: ``(B, S)`` or ``(B, T, S)``.
            key_lengths: ``(B,)`` true source lengths (the rest is padding).

        Returns:
            ``(context, weights)``: ``(B, Dv)`` and ``(B, S)`` for a single step, or
            ``(B, T, Dv)`` and ``(B, T, S)``.

        Raises:
            ValueError: shapes that do not fit together.
        """
        q, k, v, allowed, step = self.prepare(
            query, keys, values, mask=mask, key_lengths=key_lengths, **kwargs
        )
        context, weights = attention(
            q,
            k,
            v,
            score=self.scorer.spec(),
            mask=allowed,
            normalize=self.normalizer(q.squeeze(1), keys, key_lengths, **kwargs),
            return_weights=True,
            backend=self.backend,
        )  # (B, 1, T, Dv), (B, 1, T, S)
        self.report(weights)
        context, weights = context.squeeze(1), weights.squeeze(1)  # (B, T, Dv), (B, T, S)
        return (context.squeeze(1), weights.squeeze(1)) if step else (context, weights)

    def prepare(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        key_lengths: Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | KeyLengths | None, bool]:
        """Check and reshape for :func:`attnkit.attention`: ``(q (B, 1, T, Dq), k (B, 1, S, Dk),
        v (B, 1, S, Dv), allowed (B|1, 1, T|1, S), KeyLengths or None, single_step)``."""
        values = keys if values is None else values
        step = query.dim() == 2
        q3 = query.unsqueeze(1) if step else query  # (B, T, Dq)
        self._check(q3, keys, values, mask, key_lengths)
        allowed = None
        if mask is not None:
            allowed = mask.reshape(mask.shape[0], 1, -1, mask.shape[-1])  # (B, 1, T|1, S)
        allowed = masks.combine(allowed, self.extra_mask(q3, keys, key_lengths, **kwargs))
        allowed = with_key_lengths(allowed, key_lengths, keys.shape[1])  # KeyLengths if alone
        q = q3.unsqueeze(1)  # (B, 1, T, Dq)
        return q, keys.unsqueeze(1), values.unsqueeze(1), allowed, step

    @staticmethod
    def _check(
        q: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None, key_lengths: Tensor | None
    ) -> None:
        if q.dim() != 3 or keys.dim() != 3 or values.dim() != 3:
            raise ValueError(
                f"query must be (B, Dq) or (B, T, Dq), keys (B, S, Dk) and values (B, S, Dv); "
                f"got query {tuple(q.shape)}, keys {tuple(keys.shape)}, "
                f"values {tuple(values.shape)}"
            )
        if not (q.shape[0] == keys.shape[0] == values.shape[0]) or keys.shape[1] != values.shape[1]:
            raise ValueError(
                f"query, keys and values must share the batch and keys/values the length; got "
                f"query {tuple(q.shape)}, keys {tuple(keys.shape)}, values {tuple(values.shape)}"
            )
        if mask is not None and (
            mask.dtype != torch.bool
            or mask.dim() not in (2, 3)
            or mask.shape[0] != q.shape[0]
            or mask.shape[-1] != keys.shape[1]
            or (mask.dim() == 3 and mask.shape[1] not in (1, q.shape[1]))
        ):
            raise ValueError(
                f"mask must be bool (B, S) or (B, T, S) = ({q.shape[0]}, {q.shape[1]}, "
                f"{keys.shape[1]}), got {mask.dtype} {tuple(mask.shape)}"
            )
        if key_lengths is not None and key_lengths.shape != (q.shape[0],):
            raise ValueError(
                f"key_lengths must be (B,) = ({q.shape[0]},), got {tuple(key_lengths.shape)}"
            )


def as_normalizer(name: str, **params: Any) -> str | Normalizer:
    """``name`` alone when it needs no parameters, else a :class:`Normalizer`."""
    return Normalizer(name, **params) if params else name
