"""Digit strips: real sklearn pixels where the boxes say, captions, split by source image,
deterministic for a seed, and bad options named."""

from __future__ import annotations

import numpy as np
import pytest
from num2words import num2words
from PIL import Image
from sklearn.datasets import load_digits

from attnkit.data.errors import DataError
from attnkit.data.images import DigitStrips, StripStyle, load_caption_data, load_digit_images

SMALL = "digits:train=40,valid=20,test=20"


def test_the_images_are_sklearns_digits_scaled_to_one() -> None:
    digits = load_digits()
    images, labels = load_digit_images()
    np.testing.assert_array_equal(labels, digits.target)
    np.testing.assert_allclose(images, digits.images / 16.0, atol=1e-7)
    assert images.shape == (1797, 8, 8)


def test_a_noiseless_strip_holds_the_source_digits_in_its_boxes_and_nothing_else() -> None:
    raw = load_digits()
    data = DigitStrips(StripStyle(noise=0.0, jitter=3, max_gap=5), train_strips=30,
                       valid_strips=5, test_strips=5, seed=3, augment=False)
    for strip in data.train_epoch(0) + data.test:
        assert strip.image.shape[0] == 8 + 2 * 3 and strip.image.dtype == np.float32
        assert 3 <= len(strip.sources) <= 6 and len(strip.boxes) == len(strip.sources)
        words = strip.caption.split(" ")
        assert words == [num2words(int(raw.target[i])) for i in strip.sources]
        covered = np.zeros(strip.image.shape, dtype=bool)
        previous_right = 0
        for (top, left, h, w), source in zip(strip.boxes, strip.sources, strict=True):
            assert (h, w) == (8, 8) and 0 <= top <= 6
            assert 0 <= left - previous_right <= 5  # the gap (or left margin)
            np.testing.assert_allclose(strip.image[top:top + 8, left:left + 8],
                                       raw.images[source] / 16.0, atol=1e-6)
            covered[top:top + 8, left:left + 8] = True
            previous_right = left + 8
        assert 0 <= strip.image.shape[1] - previous_right <= 5  # the right margin
        assert not strip.image[~covered].any()


def test_augmented_training_digits_are_resized_and_reinked_copies_of_the_source() -> None:
    raw = load_digits()
    data = DigitStrips(StripStyle(noise=0.0, jitter=1), train_strips=20, valid_strips=5,
                       test_strips=5, seed=4)
    sizes = set()
    for strip in data.train_epoch(0):
        covered = np.zeros(strip.image.shape, dtype=bool)
        for (top, left, h, w), source in zip(strip.boxes, strip.sources, strict=True):
            assert 7 <= h <= 9 and 7 <= w <= 9 and 0 <= top <= 10 - h
            sizes.add((h, w))
            digit = Image.fromarray((raw.images[source] / 16.0).astype(np.float32), mode="F")
            reference = np.clip(np.asarray(digit.resize((w, h), Image.BILINEAR)), 0, 1)
            box = strip.image[top:top + h, left:left + w]
            gain = float((box * reference).sum() / (reference**2).sum())
            assert 0.7 - 1e-6 <= gain <= 1.0 + 1e-6
            np.testing.assert_allclose(box, gain * reference, atol=1e-5)
            covered[top:top + h, left:left + w] = True
        assert not strip.image[~covered].any()
    assert len(sizes) > 4
    assert all(box[2:] == (8, 8) for strip in data.test + data.valid for box in strip.boxes)


def test_noise_is_added_and_clipped_to_the_unit_interval() -> None:
    data = DigitStrips(StripStyle(noise=0.2), train_strips=10, valid_strips=3, test_strips=3)
    pixels = np.concatenate([s.image.ravel() for s in data.train_epoch(1)])
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    background = np.concatenate([s.image[:, -1] for s in data.train_epoch(1)])
    assert 0.0 < (background > 0).mean() < 1.0  # noise lit some background pixels, not all


def test_test_strips_use_digit_images_never_seen_in_training() -> None:
    data = load_caption_data(SMALL, seed=0)
    train = set(data.sources["train"].tolist())
    valid = set(data.sources["valid"].tolist())
    test = set(data.sources["test"].tolist())
    assert not train & test and not train & valid and not valid & test
    assert len(train | valid | test) == 1797
    assert {i for s in data.test for i in s.sources} <= test
    assert {i for s in data.valid for i in s.sources} <= valid
    assert {i for s in data.train_epoch(7) for i in s.sources} <= train


def test_the_same_seed_gives_the_same_strips_and_another_seed_other_ones() -> None:
    a, b = load_caption_data(SMALL, seed=1), load_caption_data(SMALL, seed=1)
    c = load_caption_data(SMALL, seed=2)
    for x, y in zip(a.test + a.train_epoch(5), b.test + b.train_epoch(5), strict=True):
        assert x.caption == y.caption and x.sources == y.sources
        np.testing.assert_array_equal(x.image, y.image)
    assert [s.sources for s in a.test] != [s.sources for s in c.test]
    assert [s.sources for s in a.train_epoch(5)] != [s.sources for s in a.train_epoch(6)]


def test_spec_options_shape_the_strips() -> None:
    data = load_caption_data("digits:min=2,max=2,gap=0,jitter=0,noise=0,train=5,valid=3,test=4")
    assert len(data.test) == 4 and len(data.valid) == 3 and len(data.train_epoch(0)) == 5
    assert data.image_height == 8
    assert all(s.image.shape == (8, 16) for s in data.test)
    assert data.name.startswith("digits:min=2,max=2,gap=0,jitter=0,noise=0")
    assert load_caption_data(data.name).name == data.name


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("digits:min=5,max=3", "min <= max"),
        ("digits:colour=red", "unknown option"),
        ("digits:noise=loud", "noise='loud' is not a number"),
        ("digits:noise=-1", "noise must be"),
        ("digits:train=0", "train"),
        ("digits:augment=maybe", "augment='maybe' must be 0 or 1"),
        ("pictures:x", "unknown caption data"),
    ],
)
def test_bad_specs_are_named(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_caption_data(spec)
