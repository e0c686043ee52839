"""Attention heatmaps as PNG files: one matrix, or a grid of all heads of a layer.

Queries (target tokens, or the tokens of a self-attention) run down the y axis, keys (source
tokens) along the x axis. Figure size and font size follow the number of tokens so that
labels stay readable up to ~60 tokens; past that a matrix keeps at most
:data:`MAX_MATRIX_INCHES` a side and labels every n-th token (``"i token"``), so
thousands of tokens make a picture of a few thousand pixels, not a gigapixel one.
matplotlib is imported only when a picture is drawn (``import attnkit`` stays light) and used
through its object API with the Agg canvas: no pyplot, no global state, no display needed.
Files are written atomically.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from attnkit._extras import require
from attnkit.explain._files import as_path, write_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ArrayLike = torch.Tensor | np.ndarray

MAX_MATRIX_INCHES = 14.0  # a side of one matrix, however many tokens


def plot_heatmap(
    weights: ArrayLike,
    path: str | os.PathLike[str],
    *,
    tokens: Sequence[str],
    key_tokens: Sequence[str] | None = None,
    title: str | None = None,
    query_label: str = "query",
    key_label: str = "key (attended to)",
    cmap: str = "viridis",
    annotate: bool | None = None,
    dpi: int = 150,
) -> Path:
    """Draw one attention matrix with tokens on both axes and a colour bar; write a PNG.

    The arguments after ``path`` are those of :func:`heatmap_figure`.

    Args:
        weights: ``(Lq, Lk)`` tensor or array of finite weights (one head, or a head average,
            or a rollout).
        path: the ``.png`` file to write (parent folders are created), atomically.
        tokens: the ``Lq`` query tokens (y axis; the target for encoder–decoder attention).
        key_tokens: the ``Lk`` key tokens (x axis; the source); default ``tokens``
            (self-attention).
        title: drawn above the matrix.
        query_label, key_label: the axis titles.
        cmap: a matplotlib colour map name.
        annotate: write each weight in its cell; default: when both sides have ≤ 12 tokens.
        dpi: resolution of the PNG.

    Returns:
        The path written.

    Raises:
        TypeError: ``weights`` is not a tensor/array, tokens are not strings.
        ValueError: ``weights`` is not 2-D, has NaN/inf, or its shape does not match the
            token counts; ``path`` does not end in ``.png``.
    """
    out = as_path(path, suffix=".png")
    fig = heatmap_figure(
        weights,
        tokens=tokens,
        key_tokens=key_tokens,
        title=title,
        query_label=query_label,
        key_label=key_label,
        cmap=cmap,
        annotate=annotate,
        dpi=dpi,
    )
    return _save(fig, out)


def heatmap_figure(
    weights: ArrayLike,
    *,
    tokens: Sequence[str],
    key_tokens: Sequence[str] | None = None,
    title: str | None = None,
    query_label: str = "query",
    key_label: str = "key (attended to)",
    cmap: str = "viridis",
    annotate: bool | None = None,
    dpi: int = 150,
) -> Figure:
    """The matplotlib ``Figure`` that :func:`plot_heatmap` saves (Agg canvas, no pyplot),
    e.g. to show in a notebook or to add to. Arguments and errors as :func:`plot_heatmap`."""
    matrix = _matrix(weights, "weights", ndim=2)  # (Lq, Lk)
    rows, cols = _check_tokens(matrix, tokens, key_tokens)
    n = max(len(rows), len(cols))
    font = _font_size(n)
    if annotate is None:
        annotate = len(rows) <= 12 and len(cols) <= 12
    cell = (3.4 if annotate else 1.7) * font / 72  # inches per token: room for "0.00" or a label
    cell = min(cell, MAX_MATRIX_INCHES / n)
    # Long labels take room beside (rows) and below (rotated columns) the cells: add it, so the
    # cells keep their size instead of being squeezed by the layout.
    row_labels = _text_inches(max(rows, key=len), font) + (font + 1) * 1.6 / 72
    col_labels = 0.87 * _text_inches(max(cols, key=len), font) + (font + 1) * 1.6 / 72
    width = max(len(cols) * cell, 2.5) + row_labels + 1.2  # and room for the colour bar
    if title:
        width = max(width, _text_inches(title, font + 2) + 0.5)
    height = max(len(rows) * cell, 2.5) + col_labels + (0.5 if title else 0.0)
    fig = _figure(width, height, dpi)
    ax = fig.add_subplot()
    vmin, vmax = _limits(matrix)
    image = _draw(ax, matrix, rows, cols, font, cmap, vmin=vmin, vmax=vmax)
    ax.set_xlabel(key_label, fontsize=font + 1)
    ax.set_ylabel(query_label, fontsize=font + 1)
    if annotate:
        _annotate(ax, matrix, font, vmin, vmax)
    if title:
        ax.set_title(_label(title), fontsize=font + 2)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=font)
    return fig


def plot_heads(
    weights: ArrayLike,
    path: str | os.PathLike[str],
    *,
    tokens: Sequence[str],
    key_tokens: Sequence[str] | None = None,
    title: str | None = None,
    head_names: Sequence[str] | None = None,
    columns: int | None = None,
    cmap: str = "viridis",
    dpi: int = 120,
) -> Path:
    """Draw every head of one layer in a grid sharing one colour scale; write a PNG.

    Args:
        weights: ``(H, Lq, Lk)`` tensor or array (one example of a recorded ``(B, H, Lq, Lk)``,
            e.g. ``rec.single(name)[0]``).
        path: the ``.png`` file to write.
        tokens, key_tokens: as in :func:`plot_heatmap`; labels are drawn on the left column
            and the bottom row.
        title: the figure's title (e.g. the layer's name).
        head_names: one title per head; default ``"head 0"``, ``"head 1"``, ...
        columns: panels per row; default ``ceil(sqrt(H))``.

    Returns:
        The path written.

    Raises:
        TypeError, ValueError: as :func:`plot_heatmap` (``weights`` must be 3-D here), and for
            ``head_names`` of the wrong length or ``columns`` < 1.
    """
    out = as_path(path, suffix=".png")
    fig = heads_figure(
        weights,
        tokens=tokens,
        key_tokens=key_tokens,
        title=title,
        head_names=head_names,
        columns=columns,
        cmap=cmap,
        dpi=dpi,
    )
    return _save(fig, out)


def heads_figure(
    weights: ArrayLike,
    *,
    tokens: Sequence[str],
    key_tokens: Sequence[str] | None = None,
    title: str | None = None,
    head_names: Sequence[str] | None = None,
    columns: int | None = None,
    cmap: str = "viridis",
    dpi: int = 120,
) -> Figure:
    """The matplotlib ``Figure`` that :func:`plot_heads` saves. Arguments and errors as
    :func:`plot_heads`."""
    heads = _matrix(weights, "weights", ndim=3)  # (H, Lq, Lk)
    rows, cols = _check_tokens(heads[0], tokens, key_tokens)
    count = heads.shape[0]
    if count == 0:
        raise ValueError(f"weights has no heads: shape {heads.shape}")
    names = [f"head {h}" for h in range(count)] if head_names is None else list(head_names)
    if len(names) != count:
        raise ValueError(f"head_names has {len(names)} names for {count} heads")
    if columns is None:
        columns = math.ceil(math.sqrt(count))
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be an int ≥ 1, got {columns!r}")
    columns = min(columns, count)
    grid_rows = math.ceil(count / columns)
    n = max(len(rows), len(cols))
    font = _font_size(n) - 1
    cell = min(1.5 * font / 72, MAX_MATRIX_INCHES / n)
    panel_w, panel_h = max(len(cols) * cell, 1.8), max(len(rows) * cell, 1.8)
    fig = _figure(columns * (panel_w + 0.4) + 1.5, grid_rows * (panel_h + 0.5) + 1.0, dpi)
    axes = fig.subplots(grid_rows, columns, squeeze=False, sharex=True, sharey=True)
    vmin, vmax = _limits(heads)
    image = None
    for h in range(grid_rows * columns):
        ax = axes[h // columns][h % columns]
        if h >= count:
            ax.set_visible(False)
            continue
        image = _draw(ax, heads[h], rows, cols, font, cmap, vmin=vmin, vmax=vmax)
        ax.set_title(_label(names[h]), fontsize=font + 1)
        ax.tick_params(labelleft=h % columns == 0, labelbottom=h + columns >= count)
    if title:
        fig.suptitle(_label(title), fontsize=font + 3)
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02)
    bar.ax.tick_params(labelsize=font + 2)
    return fig


# ---------------------------------------------------------------------------------------------


def _figure(width: float, height: float, dpi: int) -> Figure:
    """A matplotlib figure on the Agg canvas (no pyplot, no display).

    Raises:
        ValueError: ``dpi`` outside ``[20, 600]``.
        ModuleNotFoundError: matplotlib is missing (the message says what to install).
    """
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 20 <= dpi <= 600:
        raise ValueError(f"dpi must be an int in [20, 600], got {dpi!r}")
    # lazy: matplotlib is heavy, and only the apps extra installs it
    figure = require("matplotlib.figure", "drawing pictures")
    agg = require("matplotlib.backends.backend_agg", "drawing pictures")
    fig = figure.Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    agg.FigureCanvasAgg(fig)  # attach the Agg canvas
    return fig


def _limits(weights: np.ndarray) -> tuple[float, float]:
    """Colour scale: from 0 (or the minimum, if negative) to the maximum."""
    vmin = min(0.0, float(weights.min()))
    return vmin, max(float(weights.max()), vmin + 1e-12)


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, facecolor="white")
    return write_atomic(path, buffer.getvalue())


def _draw(
    ax: Any,
    matrix: np.ndarray,
    rows: list[str],
    cols: list[str],
    font: float,
    cmap: str,
    *,
    vmin: float,
    vmax: float,
) -> Any:
    image = ax.imshow(
        matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest"
    )
    # One label per token while they fit (a label needs ~1.3 font heights), else every n-th.
    room = max(1, int(MAX_MATRIX_INCHES * 72 / (1.3 * font)))
    row_step, col_step = math.ceil(len(rows) / room), math.ceil(len(cols) / room)
    if row_step > 1:
        rows = [f"{i} {t}" if i % row_step == 0 else "" for i, t in enumerate(rows)]
    if col_step > 1:
        cols = [f"{i} {t}" if i % col_step == 0 else "" for i, t in enumerate(cols)]
    ax.set_xticks(range(0, len(cols), col_step))
    ax.set_yticks(range(0, len(rows), row_step))
    rows, cols = rows[::row_step], cols[::col_step]
    rotation = 60 if len(cols) <= 30 else 90
    ax.set_xticklabels(
        cols,
        fontsize=font,
        rotation=rotation,
        ha="right" if rotation < 90 else "center",
        rotation_mode="anchor" if rotation < 90 else "default",
    )
    ax.set_yticklabels(rows, fontsize=font)
    ax.tick_params(length=2)
    return image


def _annotate(ax: Any, matrix: np.ndarray, font: float, vmin: float, vmax: float) -> None:
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            colour = "black" if value - vmin > 0.6 * (vmax - vmin) else "white"  # viridis
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=font - 2, color=colour)


def _text_inches(text: str, font: float) -> float:
    """Rough width of ``text`` in inches at ``font`` points (0.6 em per character)."""
    return 0.6 * len(text) * font / 72


def _font_size(n: int) -> float:
    """Tick-label font size (points) for ``n`` tokens: 11 for a few, down to 7 at 40+."""
    return float(min(11.0, max(7.0, 12.0 - 0.125 * n)))


def _matrix(weights: Any, name: str, *, ndim: int) -> np.ndarray:
    if isinstance(weights, torch.Tensor):
        if weights.is_complex() or weights.dtype == torch.bool:
            raise TypeError(f"{name} must be real numbers, got dtype {weights.dtype}")
        array = weights.detach().to("cpu", torch.float64).numpy()
    elif isinstance(weights, np.ndarray):
        if (
            weights.dtype == np.bool_
            or not np.issubdtype(weights.dtype, np.number)
            or (np.iscomplexobj(weights))
        ):
            raise TypeError(f"{name} must be a real numeric array, got dtype {weights.dtype}")
        array = weights.astype(np.float64)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array, got {type(weights).__name__}"
        )
    if array.ndim != ndim:
        want = "(Lq, Lk)" if ndim == 2 else "(H, Lq, Lk)"
        raise ValueError(
            f"{name} must be {ndim}-D {want}, got shape {array.shape}"
            + ("; pick one example first, e.g. weights[0]" if array.ndim == ndim + 1 else "")
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values (shape {array.shape})")
    if array.size == 0:
        raise ValueError(f"{name} is empty: shape {array.shape}")
    return array


def _check_tokens(
    matrix: np.ndarray, tokens: Sequence[str], key_tokens: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    rows = _token_list(tokens, "tokens")
    cols = rows if key_tokens is None else _token_list(key_tokens, "key_tokens")
    lq, lk = matrix.shape[-2:]
    if len(rows) != lq or len(cols) != lk:
        raise ValueError(
            f"weights of shape (Lq={lq}, Lk={lk}) do not match {len(rows)} tokens (queries) and "
            f"{len(cols)} key tokens"
            + (" (key_tokens defaults to tokens)" if key_tokens is None else "")
        )
    return [_label(t) for t in rows], [_label(t) for t in cols]


def _token_list(tokens: Any, name: str) -> list[str]:
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"{name} must be a sequence of strings, got {type(tokens).__name__}")
    for i, t in enumerate(tokens):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
    return list(tokens)


def _label(text: str) -> str:
    """A token as matplotlib should draw it: ``$`` is not mathtext, blanks are visible."""
    if text == "" or text.isspace() or "\n" in text or "\t" in text:
        text = repr(text)
    return text.replace("$", r"\$")
