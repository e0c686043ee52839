"""Attention over an image: the image, then one panel per word with where it looked."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from attnkit.explain._files import as_path
from attnkit.explain.heatmap import _figure, _save

__all__ = ["plot_image_attention"]

MAX_WIDTH_INCHES = 16.0  # default: panels wrap into rows past this width (1,920 px at 120 dpi)


def plot_image_attention(
    image: np.ndarray,
    words: Sequence[str],
    maps: Tensor | np.ndarray,
    path: str | os.PathLike[str],
    *,
    columns: int | None = None,
    dpi: int = 120,
) -> Path:
    """Draw ``image``, then one panel per word with its attention map over the image; write
    a PNG (atomically; parent folders created). The first panel is titled with the caption
    (the words but the last, which closes the sentence).

    Args:
        image: ``(H, W)`` grey levels in ``[0, 1]``.
        words: the ``T`` generated words (the last one the end of the sentence).
        maps: ``(T, H, W)`` attention of each word, upsampled to the image.
        path: the ``.png`` to write.
        columns: panels per row; default as many as fit in :data:`MAX_WIDTH_INCHES` (a long
            caption wraps into rows instead of one very wide picture).
        dpi: resolution.

    Raises:
        ValueError: ``path`` not ending in ``.png``, ``columns`` < 1, ``dpi`` outside
            ``[20, 600]``, or ``maps`` not ``(len(words), H, W)``.
    """
    out = as_path(path, suffix=".png")
    maps = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    height, width = image.shape
    if maps.shape != (len(words), height, width):
        raise ValueError(
            f"maps must be (len(words), H, W) = {(len(words), height, width)}, got {maps.shape}"
        )
    panels = len(words) + 1
    panel_w = min(4.0, max(1.6, width / max(height, 1) * 1.2))
    panel_h = panel_w * height / width + 0.45
    if columns is None:
        columns = max(1, int(MAX_WIDTH_INCHES // panel_w))
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be an int >= 1, got {columns!r}")
    columns = min(columns, panels)
    rows = math.ceil(panels / columns)
    fig = _figure(columns * panel_w, rows * panel_h, dpi)
    axes = fig.subplots(rows, columns, squeeze=False)
    caption = " ".join(words[:-1])
    for k in range(rows * columns):
        ax = axes[k // columns][k % columns]
        ax.set_axis_off()
        if k >= panels:
            continue
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        if k == 0:
            ax.set_title(caption or "(empty caption)", fontsize=9)
            continue
        heat = maps[k - 1]
        ax.imshow(
            heat / max(float(heat.max()), 1e-12),
            cmap="jet",
            alpha=0.5,
            vmin=0.0,
            vmax=1.0,
            interpolation="bilinear",
        )
        ax.set_title(words[k - 1], fontsize=9)
    return _save(fig, out)
