"""The base of every attnkit attention layer.

It holds one hook: ``attention_recorder``. When something (``attnkit.explain.record``) sets
it, the layer asks its kernel for what the recorder wants (:attr:`recorded_weights`: the exact
weights, or a summary of them such as ``"key_totals"``) and hands it over after each forward
pass; when it is ``None`` (always, outside a recording) the layer does no extra work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

# recorder(layer, weights (B, H, Lq, Lk) or the summary it asks for) -> None; a recorder may
# say what it wants in an attribute ``weights`` (True, the default, or a summary)
Recorder = Callable[["AttentionLayer", Any], None]


class AttentionLayer(nn.Module):
    """An ``nn.Module`` that computes attention through :func:`attnkit.attention`."""

    def __init__(self) -> None:
        super().__init__()
        self.attention_recorder: Recorder | None = None

    @property
    def recording(self) -> bool:
        """Whether a recorder is attached (the layer must then compute its weights)."""
        return self.attention_recorder is not None

    @property
    def recorded_weights(self) -> bool | str | Any:
        """What to ask :func:`attnkit.attention` for (its ``return_weights``) for the
        recorder: ``False`` when none is attached, ``True`` (the full weights) or a summary
        (``"heads_mean"``, ``"key_totals"``, ``attnkit.TopK(k)``). A layer that needs the full
        weights anyway may report them: the recorder reduces them to its summary."""
        recorder = self.attention_recorder
        return False if recorder is None else getattr(recorder, "weights", True)

    def report(self, weights: Any) -> None:
        """Hand per-head weights ``(B, H, Lq, Lk)``, or the summary :attr:`recorded_weights`
        asked for, to the recorder, if one is attached."""
        if self.attention_recorder is not None and weights is not None:
            if isinstance(weights, Tensor):
                weights = weights.detach()
            self.attention_recorder(self, weights)
