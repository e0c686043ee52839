"""Users' images: reading matches independent computations (luminance formula, Pillow's own
resize), bad files are named without losing the others, ``folder:`` data with captions.tsv."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.data.errors import DataError, DataFileNotFoundError
from attnkit.data.images import (
    UnreadableImageError,
    collate_images,
    fit_height,
    load_caption_data,
    make_batch,
    read_image,
    read_images,
)
from attnkit.data.images.files import load_pixels


def test_colour_becomes_itu_601_luminance(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "c.png")
    r, g, b = (rgb[..., c].astype(np.float64) for c in range(3))
    expected = (299 * r + 587 * g + 114 * b) / 1000 / 255
    np.testing.assert_allclose(load_pixels(tmp_path / "c.png"), expected, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize(("h", "w", "height"), [(40, 100, 12), (8, 30, 16), (33, 47, 12)])
def test_resizing_matches_pillows_bilinear_resize(h: int, w: int, height: int) -> None:
    pixels = np.random.default_rng(1).random((h, w)).astype(np.float32)
    ours = fit_height(pixels, height, invert="no")
    width = round(w * height / h)
    assert ours.shape == (height, width)
    pil = np.asarray(Image.fromarray(pixels, mode="F").resize((width, height), Image.BILINEAR))
    np.testing.assert_allclose(ours, np.clip(pil, 0, 1), atol=1e-5)


def test_width_is_capped_and_light_backgrounds_are_inverted() -> None:
    light = np.ones((10, 200), dtype=np.float32)
    light[3:7, 5:9] = 0.0  # a dark stroke on white
    out = fit_height(light, 10, max_width=50, invert="auto")
    assert out.shape == (10, 50)
    assert out.max() > 0.5 and np.median(out) == 0.0  # now bright ink on black
    np.testing.assert_array_equal(fit_height(light, 10, invert="no"), light)
    np.testing.assert_array_equal(fit_height(light, 10, invert="yes"), 1.0 - light)
    with pytest.raises(ValueError, match="invert must be one of"):
        fit_height(light, 10, invert="maybe")


def test_transparency_is_composited_on_white_and_16_bit_is_scaled(tmp_path) -> None:
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)  # fully transparent black ...
    rgba[2:4, 2:4] = (0, 0, 0, 255)  # ... with an opaque black square
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    pixels = load_pixels(tmp_path / "t.png")
    assert pixels[0, 0] == 1.0 and pixels[2, 2] == 0.0
    deep = np.full((4, 4), 65535 // 2, dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    np.testing.assert_allclose(load_pixels(tmp_path / "d.png"), 0.5, atol=1e-4)


def test_unreadable_files_are_named_and_the_rest_are_kept(tmp_path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 20), dtype=np.uint8)).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:40])
    missing = tmp_path / "missing.png"
    with pytest.raises(UnreadableImageError, match=r"notes\.png"):
        read_image(text, height=8)
    images, problems = read_images([text, good, truncated, missing, tmp_path], height=8)
    assert [p for p, _ in images] == [good]
    assert len(problems) == 4
    for name, problem in zip(["notes.png", "cut.png", "missing.png", "is a folder"], problems,
                             strict=True):
        assert name in problem


def test_collate_pads_on_the_right_and_make_batch_adds_bos_eos() -> None:
    a, b = np.full((4, 3), 0.5, np.float32), np.ones((4, 6), np.float32)
    images, widths = collate_images([a, torch.from_numpy(b)])
    assert images.shape == (2, 4, 6) and widths.tolist() == [3, 6]
    assert images[0, :, 3:].abs().sum() == 0 and images[0, :, :3].eq(0.5).all()
    with pytest.raises(ValueError, match="share one height"):
        collate_images([a, np.ones((5, 2), np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        collate_images([np.full((4, 2), np.nan, np.float32)])
    from attnkit.data.images import CaptionedImage

    batch = make_batch([CaptionedImage(a, "x"), CaptionedImage(b, "y y")], [[7], [8, 9]])
    assert batch.tgt_in.tolist() == [[1, 7, 0], [1, 8, 9]]
    assert batch.tgt_out.tolist() == [[7, 2, 0], [8, 9, 2]]
    assert batch.num_target_tokens == 5


def _folder(tmp_path, count: int = 12):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, size=(16, 8 + i), dtype=np.uint8)).save(
            tmp_path / f"img{i}.png"
        )
        lines.append(f"img{i}.png\tcaption number {i}")
    return lines


def test_a_folder_with_captions_tsv_skips_bad_images_by_name(tmp_path) -> None:
    lines = _folder(tmp_path)
    (tmp_path / "broken.png").write_text("garbage")
    lines += ["broken.png\tbroken", "", "gone.png\tgone"]
    (tmp_path / "captions.tsv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning) as caught:
        data = load_caption_data(f"folder:{tmp_path}:height=8,valid=0.2,test=0.2", seed=0)
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.png" in messages and "gone.png" in messages
    assert len(data.skipped) == 2
    names = [e.name for e in data.train_epoch(0) + data.valid + data.test]
    assert sorted(names) == sorted(f"img{i}.png" for i in range(12))
    assert all(e.image.shape[0] == 8 for e in data.test)
    assert data.train_captions() == [e.caption for e in data.train_epoch(0)]


def test_folder_errors_name_the_file_and_line(tmp_path) -> None:
    with pytest.raises(DataFileNotFoundError, match=r"captions\.tsv"):
        load_caption_data(f"folder:{tmp_path}")
    with pytest.raises(DataFileNotFoundError, match="does not exist"):
        load_caption_data(f"folder:{tmp_path / 'nowhere'}")
    lines = _folder(tmp_path, 3)
    (tmp_path / "captions.tsv").write_text("\n".join([*lines, "img0.png no tab here"]))
    with pytest.raises(DataError, match=r"captions.tsv:4: expected 'file name<TAB>caption'"):
        load_caption_data(f"folder:{tmp_path}")
    (tmp_path / "captions.tsv").write_text("\n".join([*lines, "img0.png\tagain"]))
    with pytest.raises(DataError, match="already captioned on line 1"):
        load_caption_data(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="unknown option"):
        load_caption_data(f"folder:{tmp_path}:size=3")
