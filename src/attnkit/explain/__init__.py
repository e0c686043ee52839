"""Seeing what a model attends to.

- :func:`record`: capture the per-head weights of every attnkit attention layer in a model.
- :func:`rollout`: attention rollout across layers (Abnar & Zuidema 2020).
- :func:`plot_heatmap`, :func:`plot_heads`: PNG heatmaps (matplotlib, imported on first use);
  :func:`heatmap_figure`, :func:`heads_figure` give the matplotlib figures instead.
- :func:`plot_image_attention`: an image with each word's attention over it (captioning).
- :func:`write_viewer`, :func:`render_viewer`: a self-contained HTML head view; long inputs
  keep each query's top-k keys (:mod:`attnkit.explain.compact`).
"""

from attnkit.explain.heatmap import heads_figure, heatmap_figure, plot_heads, plot_heatmap
from attnkit.explain.image import plot_image_attention
from attnkit.explain.record import Recording, record
from attnkit.explain.rollout import rollout
from attnkit.explain.viewer import render_viewer, write_viewer

__all__ = [
    "Recording",
    "heads_figure",
    "heatmap_figure",
    "plot_heads",
    "plot_heatmap",
    "plot_image_attention",
    "record",
    "render_viewer",
    "rollout",
    "write_viewer",
]
