"""Luong, Pham & Manning 2015: global and local attention with dot/general/concat/location scores.

- ``global``: every source position.
- ``local-m``: monotonic, ``p_t = t``; attend to ``[p_t − D, p_t + D]``.
- ``local-p``: predictive, ``p_t = S · sigmoid(v_pᵀ tanh(W_p h_t))``; weights
  ``softmax(score)_s · exp(−(s − p_t)² / (2σ²))`` over ``|s − p_t| ≤ D``, ``σ = D/2``.

Shape legend: B batch, T query steps, S source length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attnkit import masks
from attnkit.layers.single import ScoreParameters, SingleHeadAttention, as_normalizer

MODES = ("global", "local-m", "local-p")


class LuongAttention(SingleHeadAttention):
    """Luong attention of the current decoder state ``h_t`` over encoder states.

    Args:
        query_dim: Dq, the decoder state size.
        key_dim: Dk, the encoder state size (default Dq).
        score: ``"dot"``, ``"general"`` (default), ``"concat"`` or ``"location"``.
        mode: ``"global"``, ``"local-m"`` or ``"local-p"``.
        window: D, the half-width of the local window (Luong et al. use 10).
        hidden_dim: width of the concat score and of the local-p position predictor.
        max_keys: the longest source length (``location`` score only).

    ``forward(query, keys, values=None, *, mask=None, key_lengths=None, positions=None)``:
    ``positions`` are the target positions ``t`` for ``local-m``: an ``int`` or ``(B,)`` for a
    single step ``query (B, Dq)``; default ``0..T-1`` for ``query (B, T, Dq)``.

    Raises:
        ValueError: unknown score or mode, a local mode without ``window``, ``local-m`` on a
            single step without ``positions``.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int | None = None,
        *,
        score: str = "general",
        mode: str = "global",
        window: int | None = None,
        hidden_dim: int | None = None,
        max_keys: int | None = None,
        backend: str = "auto",
    ) -> None:
        key_dim = query_dim if key_dim is None else key_dim
        super().__init__(
            ScoreParameters(score, query_dim, key_dim, hidden_dim=hidden_dim, max_keys=max_keys),
            backend=backend,
        )
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if mode != "global" and (window is None or window < 0):
            raise ValueError(
                f"mode {mode!r} needs window=D ≥ 0 (Luong et al. use 10), got {window}"
            )
        self.mode, self.window = mode, window
        if mode == "local-p":
            hidden = hidden_dim or query_dim
            self.position_proj = nn.Linear(query_dim, hidden, bias=False)  # W_p
            self.position_v = nn.Linear(hidden, 1, bias=False)  # v_p

    def predict_positions(self, query: Tensor, source_lengths: Tensor) -> Tensor:
        """local-p's ``p_t = S · sigmoid(v_pᵀ tanh(W_p h_t))``: ``(B, T)`` from ``(B, T, Dq)``."""
        gate = torch.sigmoid(self.position_v(torch.tanh(self.position_proj(query)))).squeeze(-1)
        return source_lengths.to(gate.dtype).unsqueeze(-1) * gate  # (B, T)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        key_lengths: Tensor | None = None,
        positions: int | Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        q3 = query.unsqueeze(1) if query.dim() == 2 else query  # (B, T, Dq)
        extra: dict[str, Any] = {}
        if self.mode == "local-m":
            extra["centers"] = self._monotonic_positions(q3, positions, query.dim() == 2)
        elif self.mode == "local-p":
            lengths = (
                key_lengths
                if key_lengths is not None
                else torch.full((q3.shape[0],), keys.shape[1], device=keys.device)
            )
            extra["centers"] = self.predict_positions(q3, lengths)  # (B, T)
        return super().forward(query, keys, values, mask=mask, key_lengths=key_lengths, **extra)

    def _monotonic_positions(self, q: Tensor, positions: int | Tensor | None, step: bool) -> Tensor:
        b, t = q.shape[:2]
        if positions is None:
            if step:
                raise ValueError("local-m on a single step needs positions=t (int or (B,))")
            return torch.arange(t, device=q.device).expand(b, t)  # (B, T)
        p = torch.as_tensor(positions, device=q.device)
        if p.dim() == 0:
            p = p.expand(b)
        if step:
            p = p.reshape(-1, 1)  # (B, 1)
        if p.shape != (b, t):
            raise ValueError(
                f"positions must be an int, (B,) or (B, T) = ({b}, {t}), got {tuple(p.shape)}"
            )
        return p

    def extra_mask(
        self, query: Tensor, keys: Tensor, key_lengths: Tensor | None, **kwargs: Any
    ) -> Tensor | None:
        if self.mode == "global":
            return None
        centers = kwargs["centers"].to(torch.float32)  # (B, T)
        return masks.around(centers, keys.shape[1], float(self.window)).unsqueeze(1)  # (B,1,T,S)

    def normalizer(
        self, query: Tensor, keys: Tensor, key_lengths: Tensor | None, **kwargs: Any
    ) -> Any:
        if self.mode != "local-p":
            return "softmax"
        return as_normalizer(
            "local_p", centers=kwargs["centers"].unsqueeze(1), sigma=self.window / 2
        )  # centers (B, 1, T)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, window={self.window}"
