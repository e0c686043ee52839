"""attnkit.explain heatmaps: PNG files with tokens on both axes, readable up to ~60 tokens."""

from __future__ import annotations

import itertools
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.explain import plot_heads, plot_heatmap
from attnkit.explain.heatmap import heads_figure, heatmap_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def weights(lq: int, lk: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(lq, lk, generator=g), dim=-1)


def test_self_attention_png_has_the_tokens_on_both_axes(tmp_path: Path) -> None:
    tokens = ["The", "cat", "sat", "$x$", "<b>", "it"]
    out = plot_heatmap(weights(6, 6), tmp_path / "sub" / "attn.png", tokens=tokens, title="L0")
    assert out == tmp_path / "sub" / "attn.png"
    w, h = png_size(out)
    assert w > 200 and h > 200
    assert [p.name for p in out.parent.iterdir()] == ["attn.png"]  # no temporary file left
    fig = heatmap_figure(weights(6, 6), tokens=tokens)
    ax = fig.axes[0]
    fig.canvas.draw()
    shown = [t.get_text() for t in ax.get_xticklabels()]
    assert shown == ["The", "cat", "sat", r"\$x\$", "<b>", "it"]  # "$" is not mathtext
    assert [t.get_text() for t in ax.get_yticklabels()] == shown
    assert len(fig.axes) == 2  # the matrix and its colour bar


def test_cross_attention_puts_source_on_x_and_target_on_y(tmp_path: Path) -> None:
    source = ["drei", "hundert", "vier", "und", "zwanzig"]
    target = ["three", "hundred", "twenty", "four"]
    matrix = weights(4, 5)
    fig = heatmap_figure(matrix, tokens=target, key_tokens=source, key_label="source")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == source
    assert [t.get_text() for t in ax.get_yticklabels()] == target
    assert ax.get_xlabel() == "source"
    np.testing.assert_allclose(ax.images[0].get_array(), matrix.numpy())
    plot_heatmap(matrix.numpy(), tmp_path / "x.png", tokens=target, key_tokens=source)
    assert png_size(tmp_path / "x.png")[0] > 200


def boxes_overlap(boxes) -> bool:
    return any(a.overlaps(b) for a, b in itertools.pairwise(boxes))


def test_sixty_tokens_stay_readable(tmp_path: Path) -> None:
    tokens = [f"tok{i}" if i % 7 else f"##word{i}" for i in range(60)]
    fig = heatmap_figure(weights(60, 60), tokens=tokens, dpi=100)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        assert min(t.get_fontsize() for t in labels) >= 7  # points
        assert not boxes_overlap([t.get_window_extent(renderer) for t in labels])
    small = plot_heatmap(weights(5, 5), tmp_path / "small.png", tokens=tokens[:5])
    large = plot_heatmap(weights(60, 60), tmp_path / "large.png", tokens=tokens)
    assert png_size(large)[1] > 2 * png_size(small)[1]  # the figure grows with the tokens


def test_grid_of_heads(tmp_path: Path) -> None:
    tokens = ["a", "b", "c", "d"]
    heads = torch.stack([weights(4, 4, seed=s) for s in range(5)])  # (H, L, L)
    fig = heads_figure(heads, tokens=tokens, title="layer 1")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert [ax.get_title() for ax in panels] == [f"head {h}" for h in range(5)]
    for h, ax in enumerate(panels):
        np.testing.assert_allclose(ax.images[0].get_array(), heads[h].numpy())
    assert len({ax.images[0].get_clim() for ax in panels}) == 1  # one shared colour scale
    out = plot_heads(heads, tmp_path / "heads.png", tokens=tokens, columns=5)
    w, h = png_size(out)
    assert w > 2 * h  # one row of five panels


def test_an_existing_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"old")
    plot_heatmap(weights(3, 3), path, tokens=["x", "y", "z"])
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert len(list(tmp_path.iterdir())) == 1


def test_bad_input_raises_clear_errors(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    with pytest.raises(ValueError, match=r"2-D \(Lq, Lk\).*weights\[0\]"):
        plot_heatmap(torch.rand(2, 3, 3), p, tokens=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\(Lq=3, Lk=3\) do not match 2 tokens"):
        plot_heatmap(torch.rand(3, 3), p, tokens=["a", "b"])
    bad = torch.rand(2, 2)
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        plot_heatmap(bad, p, tokens=["a", "b"])
    with pytest.raises(ValueError, match=r"must end in '\.png'"):
        plot_heatmap(torch.rand(2, 2), tmp_path / "a.jpg", tokens=["a", "b"])
    with pytest.raises(TypeError, match=r"tokens\[1\] must be a str"):
        plot_heatmap(torch.rand(2, 2), p, tokens=["a", 2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sequence of strings"):
        plot_heatmap(torch.rand(2, 2), p, tokens="ab")
    with pytest.raises(TypeError, match=r"torch\.Tensor or numpy"):
        plot_heatmap([[1.0]], p, tokens=["a"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"3-D \(H, Lq, Lk\)"):
        plot_heads(torch.rand(2, 2), p, tokens=["a", "b"])
    with pytest.raises(ValueError, match="head_names has 1 names for 2 heads"):
        plot_heads(torch.rand(2, 2, 2), p, tokens=["a", "b"], head_names=["x"])
    assert not p.exists()


def test_importing_attnkit_explain_does_not_import_matplotlib() -> None:
    code = "import sys, attnkit, attnkit.explain; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
