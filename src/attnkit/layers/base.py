"""The base of every attnkit attention layer.

It holds one hook: ``attention_recorder``. When something (``attnkit.explain.record``) sets
it, the layer asks its kernel for the exact weights and hands them over after each forward
pass; when it is ``None`` (always, outside a recording) the layer does no extra work.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

# recorder(layer, weights (B, H, Lq, Lk)) -> None
Recorder = Callable[["AttentionLayer", Tensor], None]


class AttentionLayer(nn.Module):
    """An ``nn.Module`` that computes attention through :func:`attnkit.attention`."""

    def __init__(self) -> None:
        super().__init__()
        self.attention_recorder: Recorder | None = None

    @property
    def recording(self) -> bool:
        """Whether a recorder is attached (the layer must then compute its weights)."""
        return self.attention_recorder is not None

    def report(self, weights: Tensor | None) -> None:
        """Hand per-head weights ``(B, H, Lq, Lk)`` to the recorder, if one is attached."""
        if self.attention_recorder is not None and weights is not None:
            self.attention_recorder(self, weights.detach())
