"""Location-aware attention (Chorowski et al. 2015): the score also sees the previous alignment.

``f_i = F * α_{i-1}`` convolves the previous step's weights with ``C`` learned filters of width
``K``, and ``e_ij = wᵀ tanh(W s_{i-1} + V h_j + U f_ij + b)``, ``α_i = softmax(e_i)``,
``c_i = Σ_j α_ij h_j``. The layer owns ``F``, ``W``, ``V``, ``U``, ``w``, ``b``; the score itself
is :func:`attnkit.scores.location_aware`, evaluated by :func:`attnkit.attention`.

Shape legend: B batch, T query steps, S source (key) length, Dq/Dk/Dv query/key/value sizes,
A attention width, C location filters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.functional import attention
from attnkit.layers.base import AttentionLayer
from attnkit.layers.masking import with_key_lengths
from attnkit.scores import Score


class LocationAwareAttention(AttentionLayer):
    """Attention of a decoder state over encoder states that also looks at where it attended
    at the previous step (Chorowski et al. 2015). Returns ``(context, weights)``.

    Args:
        query_dim: Dq, the decoder state size (the query is the *previous* state ``s_{i-1}``).
        key_dim: Dk, the encoder state size.
        hidden_dim: A, the width of ``tanh`` (default Dk).
        channels: C, the number of location filters ``F``.
        kernel_size: K, the (odd) width of each filter, in key positions.
        backend: the :func:`attnkit.attention` backend.

    Raises:
        ValueError: a size < 1, or an even ``kernel_size`` (the features would not be centred).
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        hidden_dim: int | None = None,
        *,
        channels: int = 10,
        kernel_size: int = 15,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        hidden = hidden_dim or key_dim
        for name, value in (
            ("query_dim", query_dim),
            ("key_dim", key_dim),
            ("hidden_dim", hidden),
            ("channels", channels),
            ("kernel_size", kernel_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centred filters), got {kernel_size}")
        self.backend = backend

        def param(*shape: int, fan_in: int) -> nn.Parameter:
            bound = fan_in**-0.5
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.F = param(channels, kernel_size, fan_in=kernel_size)
        self.W = param(hidden, query_dim, fan_in=query_dim)
        self.V = param(hidden, key_dim, fan_in=key_dim)
        self.U = param(hidden, channels, fan_in=channels)
        self.w = param(hidden, fan_in=hidden)
        self.b = nn.Parameter(torch.zeros(hidden))

    def project_keys(self, keys: Tensor) -> Tensor:
        """``V h_j`` for every key: ``(B, S, Dk) -> (B, S, A)``. A decoder computes this once per
        utterance and passes it as ``projected_keys`` at every step."""
        return torch.matmul(keys, self.V.transpose(0, 1))  # (B, S, A)

    def location_features(self, previous: Tensor) -> Tensor:
        """``f = F * α_{i-1}``: ``(B, S)`` or ``(B, T, S)`` -> ``(B, S, C)`` or ``(B, T, S, C)``.

        ``f_j[c] = Σ_t F[c, t] · α_{j + t - K//2}`` (zero outside ``0..S-1``): each filter is
        centred on ``j``, as ``nn.Conv1d(padding=K // 2)`` computes it (the paper's ``*``;
        the flip of a true convolution is absorbed in the learned ``F``). Computed as windows
        times a matrix, which is faster than a convolution call at these tiny sizes.
        """
        k = self.F.shape[1]
        alpha = previous.to(self.F.dtype)
        padded = nn.functional.pad(alpha, (k // 2, k // 2))  # (B, [T,] S + K - 1)
        windows = padded.unfold(-1, k, 1)  # (B, [T,] S, K): window j is α_{j-K//2 .. j+K//2}
        return torch.matmul(windows, self.F.transpose(0, 1))  # (B, [T,] S, C)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        previous: Tensor,
        values: Tensor | None = None,
        *,
        key_lengths: Tensor | None = None,
        mask: Tensor | None = None,
        projected_keys: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend from ``query`` to ``keys`` given the previous alignment; sum ``values``.

        Args:
            query: ``s_{i-1}``: ``(B, Dq)`` for one decoding step, or ``(B, T, Dq)``.
            keys: ``(B, S, Dk)`` encoder states ``h_j``.
            previous: ``α_{i-1}``: ``(B, S)`` (one step) or ``(B, T, S)``, the weights of the
                previous step (at the first step e.g. uniform over the real keys).
            values: ``(B, S, Dv)``; default ``keys``.
            key_lengths: ``(B,)`` true source lengths (the rest is padding).
            mask: bool, True = may attend: ``(B, S)`` or ``(B, T, S)``.
            projected_keys: ``(B, S, A)`` = :meth:`project_keys` of ``keys`` (saves recomputing
                ``V h_j`` at every step); default: computed here.

        Returns:
            ``(context, weights)``: ``(B, Dv)`` and ``(B, S)`` for a single step, or
            ``(B, T, Dv)`` and ``(B, T, S)``.

        Raises:
            ValueError: shapes that do not fit together (all of them are named).
        """
        values = keys if values is None else values
        step = query.dim() == 2
        q3 = query.unsqueeze(1) if step else query  # (B, T, Dq)
        prev3 = previous.unsqueeze(1) if previous.dim() == 2 else previous  # (B, T, S)
        self._check(q3, keys, values, prev3, mask, key_lengths, projected_keys)
        k = self.project_keys(keys) if projected_keys is None else projected_keys  # (B, S, A)
        features = self.location_features(prev3).unsqueeze(1)  # (B, 1, T, S, C)
        allowed = None
        if mask is not None:
            allowed = mask.reshape(mask.shape[0], 1, -1, mask.shape[-1])  # (B, 1, T|1, S)
        allowed = with_key_lengths(allowed, key_lengths, keys.shape[1])  # KeyLengths if alone
        score = Score(
            "location_aware", w_q=self.W, w_f=self.U, v=self.w, bias=self.b, features=features
        )
        context, weights = attention(
            q3.unsqueeze(1),  # (B, 1, T, Dq)
            k.unsqueeze(1),  # (B, 1, S, A)
            values.unsqueeze(1),  # (B, 1, S, Dv)
            score=score,
            mask=allowed,
            return_weights=True,
            backend=self.backend,
        )  # (B, 1, T, Dv), (B, 1, T, S)
        self.report(weights)
        context, weights = context.squeeze(1), weights.squeeze(1)  # (B, T, Dv), (B, T, S)
        return (context.squeeze(1), weights.squeeze(1)) if step else (context, weights)

    def _check(
        self,
        q: Tensor,
        keys: Tensor,
        values: Tensor,
        previous: Tensor,
        mask: Tensor | None,
        key_lengths: Tensor | None,
        projected_keys: Tensor | None,
    ) -> None:
        def shapes() -> str:
            return (
                f"query {tuple(q.shape)}, keys {tuple(keys.shape)}, values "
                f"{tuple(values.shape)}, previous {tuple(previous.shape)}"
            )

        if q.dim() != 3 or keys.dim() != 3 or values.dim() != 3 or previous.dim() != 3:
            raise ValueError(
                f"query must be (B, Dq) or (B, T, Dq), keys (B, S, Dk), values (B, S, Dv) and "
                f"previous (B, S) or (B, T, S); got {shapes()}"
            )
        b, t, s = q.shape[0], q.shape[1], keys.shape[1]
        if q.shape[-1] != self.W.shape[1] or keys.shape[-1] != self.V.shape[1]:
            raise ValueError(
                f"query dim must be {self.W.shape[1]} and key dim {self.V.shape[1]}; got {shapes()}"
            )
        if values.shape[:2] != (b, s) or keys.shape[0] != b or previous.shape != (b, t, s):
            raise ValueError(
                f"query, keys, values and previous must share the batch B, keys/values/previous "
                f"the length S and previous the steps T; got {shapes()}"
            )
        if not previous.is_floating_point():
            raise TypeError(f"previous must be floating-point weights, got {previous.dtype}")
        if projected_keys is not None and projected_keys.shape != (b, s, self.V.shape[0]):
            raise ValueError(
                f"projected_keys must be (B, S, A) = ({b}, {s}, {self.V.shape[0]}), got "
                f"{tuple(projected_keys.shape)}"
            )
        if mask is not None and (
            mask.dtype != torch.bool
            or mask.dim() not in (2, 3)
            or mask.shape[0] != b
            or mask.shape[-1] != s
            or (mask.dim() == 3 and mask.shape[1] not in (1, t))
        ):
            raise ValueError(
                f"mask must be bool (B, S) or (B, T, S) = ({b}, {t}, {s}), got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        if key_lengths is not None and key_lengths.shape != (b,):
            raise ValueError(f"key_lengths must be (B,) = ({b},), got {tuple(key_lengths.shape)}")
