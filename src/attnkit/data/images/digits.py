"""``digits``: scikit-learn's 1,797 real 8×8 handwritten digits, stitched into captioned strips.

Where the data comes from: ``sklearn.datasets.load_digits`` (the test set of the UCI
"optdigits" collection, 1,797 images of 8×8 pixels with ink values 0..16), shipped inside the
scikit-learn wheel, so nothing is downloaded.

A *strip* holds 3–6 digits side by side, read left to right, on a dark background (ink is
bright, values in [0, 1]): a random left margin, then each digit at a random vertical offset
(``jitter``) followed by a random gap, then a random right margin, and Gaussian noise
(``noise``, clipped to [0, 1]). Training strips are also *augmented* (``augment=1``, the
default): each digit is resized to 7–9 pixels in each direction (antialiased bilinear) and
its ink scaled by a factor in [0.7, 1]; validation and test strips never are. The caption
is the digits' English words, e.g. ``"eight six five two"``. Each strip also records the box
``(top, left, height, width)`` of every digit, so a test can check the pixels and an experiment
can check where attention looked.

The split is by *source digit image*: the 1,797 images are divided into train / valid / test
by a keyed hash of their index (:func:`attnkit.data.splits.split_by_key`), and a strip only
uses images of one split, so the test strips show handwriting never seen in training.
Everything is a function of the seed (NumPy ``default_rng``).

Shape legend: H strip height (``8 + 2·jitter``), W strip width (varies per strip).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from attnkit.data.errors import DataError, MissingPackageError
from attnkit.data.images.examples import CaptionData, CaptionedImage
from attnkit.data.registry import check_options, int_option, parse_spec
from attnkit.data.splits import split_by_key, split_fractions

__all__ = ["DIGIT_WORDS", "DigitStrips", "StripStyle", "load_digit_images", "parse_digits_spec"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_SIZE = 8
_OPTIONS = ("min", "max", "gap", "jitter", "noise", "augment", "train", "valid", "test",
            "valid_frac", "test_frac")
AUGMENT_SIZES = (7, 8, 9)  # heights and widths an augmented digit is resized to
AUGMENT_GAIN = (0.7, 1.0)  # range of the ink scale of an augmented digit


@lru_cache(maxsize=1)
def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: ``images (1797, 8, 8)`` float32 in [0, 1] and ``labels (1797,)``.

    Raises:
        MissingPackageError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency of the apps extra
        raise MissingPackageError(
            "the digits data ship with scikit-learn: pip install scikit-learn"
        ) from None
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8)
    images.setflags(write=False)
    labels = digits.target.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


@dataclass(frozen=True)
class StripStyle:
    """How strips are drawn.

    Attributes:
        min_digits, max_digits: digits per strip (inclusive range).
        max_gap: gaps between digits and the margins are drawn from ``0..max_gap`` pixels.
        jitter: each digit's top is drawn from ``0..2·jitter``; the strip is ``8 + 2·jitter``
            pixels high.
        noise: standard deviation of the Gaussian noise added to every pixel (then clipped).

    Raises:
        DataError: a range that is empty or negative, or a noise that is negative or not finite.
    """

    min_digits: int = 3
    max_digits: int = 6
    max_gap: int = 4
    jitter: int = 2
    noise: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise DataError(
                f"digits: need 1 <= min <= max digits per strip, got min={self.min_digits}, "
                f"max={self.max_digits}"
            )
        if self.max_gap < 0 or self.jitter < 0:
            raise DataError(
                f"digits: gap and jitter must be >= 0, got gap={self.max_gap}, "
                f"jitter={self.jitter}"
            )
        if not np.isfinite(self.noise) or self.noise < 0:
            raise DataError(f"digits: noise must be a finite number >= 0, got {self.noise}")

    @property
    def height(self) -> int:
        """The strip height in pixels."""
        return DIGIT_SIZE + 2 * self.jitter


class DigitStrips(CaptionData):
    """Captioned strips of real handwritten digits, split by source image (module doc).

    Args:
        style: how strips are drawn.
        train_strips: strips per training epoch (fresh strips every epoch).
        valid_strips, test_strips: sizes of the fixed validation and test sets.
        valid_frac, test_frac: fractions of the 1,797 digit images held out for each.
        augment: resize and re-ink the digits of training strips (see the module doc).
        seed: the same seed gives the same split, the same valid/test strips and the same
            training strips for the same epoch seed.

    Raises:
        DataError: a non-positive number of strips.
    """

    def __init__(
        self,
        style: StripStyle | None = None,
        *,
        train_strips: int = 8000,
        valid_strips: int = 500,
        test_strips: int = 1000,
        valid_frac: float = 0.1,
        test_frac: float = 0.2,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        for name, value in (("train", train_strips), ("valid", valid_strips),
                            ("test", test_strips)):
            if value < 1:
                raise DataError(f"digits: {name}={value} strips; need at least 1")
        self.style = style or StripStyle()
        self.seed = seed
        self.train_strips = train_strips
        self.augment = augment
        self._variants: dict[tuple[int, int], np.ndarray] = {}
        images, labels = load_digit_images()
        self.images, self.labels = images, labels
        train, valid, test = split_by_key(
            list(range(len(labels))), lambda i: i, valid=valid_frac, test=test_frac, seed=seed
        )
        #: indices into :attr:`images` of the digit images each split draws from
        self.sources = {"train": np.array(train), "valid": np.array(valid),
                        "test": np.array(test)}
        self.image_height = self.style.height
        self.valid = self.strips("valid", valid_strips, np.random.default_rng([seed, 1]))
        self.test = self.strips("test", test_strips, np.random.default_rng([seed, 2]))
        s = self.style
        self.name = (
            f"digits:min={s.min_digits},max={s.max_digits},gap={s.max_gap},jitter={s.jitter},"
            f"noise={s.noise:g},augment={int(augment)},train={train_strips},"
            f"valid={valid_strips},test={test_strips}"
        )
        self.description = (
            f"strips of {s.min_digits}-{s.max_digits} of scikit-learn's 1,797 real 8x8 "
            f"handwritten digits ({len(train)}/{len(valid)}/{len(test)} source images for "
            "train/valid/test), captioned with digit words"
        )

    def train_epoch(self, seed: int) -> list[CaptionedImage]:
        """``train_strips`` fresh training strips, a function of ``(self.seed, seed)``."""
        rng = np.random.default_rng([self.seed, 3, seed])
        return self.strips("train", self.train_strips, rng, augment=self.augment)

    def train_captions(self) -> list[str]:
        """Texts holding every digit word both first and after a space (``"two two"``), so a
        tokenizer learns each word in both places of a caption."""
        return [f"{word} {word}" for word in DIGIT_WORDS]

    def strips(self, split: str, count: int, rng: np.random.Generator, *,
               augment: bool = False) -> list[CaptionedImage]:
        """``count`` strips drawn with ``rng`` from the digit images of ``split``
        (``augment``: resize and re-ink each digit, see the module doc).

        Raises:
            ValueError: an unknown split.
        """
        if split not in self.sources:
            raise ValueError(f"split must be one of {sorted(self.sources)}, got {split!r}")
        pool = self.sources[split]
        return [
            self.draw(rng.choice(pool, size=rng.integers(self.style.min_digits,
                                                         self.style.max_digits + 1)), rng,
                      name=f"{split} strip {i}", augment=augment)
            for i in range(count)
        ]

    def draw(self, indices: np.ndarray, rng: np.random.Generator, *, name: str = "strip",
             augment: bool = False) -> CaptionedImage:
        """One strip of the digit images ``indices`` (left to right), laid out with ``rng``."""
        s = self.style
        n = len(indices)
        if augment:
            sizes = [z for z in AUGMENT_SIZES if z <= s.height]
            shapes = [(sizes[a], sizes[b]) for a, b in rng.integers(0, len(sizes), size=(n, 2))]
            gains = rng.uniform(*AUGMENT_GAIN, size=n)
            digits = [self.variant(shape)[i] * g for shape, i, g in zip(shapes, indices, gains,
                                                                         strict=True)]
        else:
            digits = [self.images[i] for i in indices]
        gaps = rng.integers(0, s.max_gap + 1, size=n)  # left margin, then gaps
        right = int(rng.integers(0, s.max_gap + 1))  # right margin
        spare = rng.random(n)  # where each digit sits in the free rows above and below it
        width = int(gaps.sum()) + right + sum(d.shape[1] for d in digits)
        canvas = np.zeros((s.height, width), dtype=np.float32)  # (H, W)
        boxes = []
        left = 0
        for k, digit in enumerate(digits):
            h, w = digit.shape
            left += int(gaps[k])
            top = int(spare[k] * (s.height - h + 1))  # uniform over 0..H-h
            canvas[top:top + h, left:left + w] = digit
            boxes.append((top, left, h, w))
            left += w
        if s.noise > 0:
            canvas += rng.normal(0.0, s.noise, size=canvas.shape).astype(np.float32)
            np.clip(canvas, 0.0, 1.0, out=canvas)
        caption = " ".join(DIGIT_WORDS[int(self.labels[i])] for i in indices)
        return CaptionedImage(canvas, caption, name, tuple(boxes),
                              tuple(int(i) for i in indices))


    def variant(self, shape: tuple[int, int]) -> np.ndarray:
        """All digit images resized to ``shape`` (antialiased bilinear): ``(1797, h, w)``."""
        if shape not in self._variants:
            import torch
            import torch.nn.functional as F

            images = torch.from_numpy(np.array(self.images))[:, None]  # (N, 1, 8, 8)
            resized = F.interpolate(images, size=shape, mode="bilinear", antialias=True,
                                    align_corners=False)[:, 0]  # (N, h, w)
            self._variants[shape] = resized.clamp(0.0, 1.0).numpy()
        return self._variants[shape]


def parse_digits_spec(spec: str, *, seed: int = 0) -> DigitStrips:
    """``digits`` or ``digits:min=3,max=6,gap=4,jitter=2,noise=0.1,augment=1,train=8000,
    valid=500,test=1000,valid_frac=0.1,test_frac=0.2`` -> :class:`DigitStrips`.

    Raises:
        DataError: an unknown or malformed option.
    """
    rest = spec.strip()[len("digits"):].lstrip(":")
    options = parse_spec(f"digits:strips:{rest}")[2] if rest else {}
    where = "digits"
    check_options(where, options, _OPTIONS)
    style = StripStyle(
        min_digits=int_option(where, options, "min", 3, minimum=1),
        max_digits=int_option(where, options, "max", 6, minimum=1),
        max_gap=int_option(where, options, "gap", 4),
        jitter=int_option(where, options, "jitter", 2),
        noise=_float_option(options, "noise", 0.1),
    )
    fractions = {"valid": options.get("valid_frac"), "test": options.get("test_frac")}
    valid_frac, test_frac = split_fractions(
        {k: v for k, v in fractions.items() if v is not None}, valid=0.1, test=0.2
    )
    return DigitStrips(
        style,
        train_strips=int_option(where, options, "train", 8000, minimum=1),
        valid_strips=int_option(where, options, "valid", 500, minimum=1),
        test_strips=int_option(where, options, "test", 1000, minimum=1),
        valid_frac=valid_frac,
        test_frac=test_frac,
        augment=_flag(options, "augment", True),
        seed=seed,
    )


def _float_option(options: dict[str, str], name: str, default: float) -> float:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise DataError(f"digits: option {name}={raw!r} is not a number") from None


def _flag(options: dict[str, str], name: str, default: bool) -> bool:
    raw = options.get(name)
    if raw is None:
        return default
    if raw.lower() not in ("0", "1", "yes", "no", "true", "false"):
        raise DataError(f"digits: option {name}={raw!r} must be 0 or 1")
    return raw.lower() in ("1", "yes", "true")
