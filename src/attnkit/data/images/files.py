"""Users' own images: reading picture files, and ``folder:PATH`` (images + ``captions.tsv``).

Reading (:func:`read_image`): any format Pillow opens; transparency is composited onto white,
colour is converted to luminance (ITU-R 601-2, Pillow's ``"L"`` mode), 16-bit and float images
are scaled to [0, 1]; the image is resized to the model's height keeping its aspect ratio
(bilinear with antialiasing, ``torch.nn.functional.interpolate``), its width capped; and
pictures with a light background (median above 0.5) are inverted so that ink is bright, as in
the digit strips (``invert="auto"``; or ``"yes"``/``"no"``).

``folder:PATH[:height=32,valid=0.1,test=0.1,invert=auto]`` reads ``PATH/captions.tsv``: one
``file name<TAB>caption`` per line (UTF-8, blank lines skipped). Examples are split by file
name. An image that is missing or unreadable is skipped with a warning naming the file (the
rest are kept); the list of problems is :attr:`ImageFolder.skipped`.

Shape legend: H target height, W width after resizing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attnkit.data.errors import DataError, DataFileNotFoundError
from attnkit.data.images.examples import CaptionData, CaptionedImage
from attnkit.data.registry import check_options, int_option, parse_spec
from attnkit.data.splits import split_by_key, split_fractions
from attnkit.data.text import utf8_lines

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "UnreadableImageError", "fit_height",
           "image_files", "read_captions_tsv", "read_image", "read_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm", ".pbm")
INVERT = ("auto", "yes", "no")
_OPTIONS = ("height", "max_width", "valid", "test", "invert")


class UnreadableImageError(DataError):
    """An image file that cannot be read (missing, not an image, truncated); names the file."""


def load_pixels(path: str | os.PathLike[str]) -> np.ndarray:
    """The luminance of an image file as ``(h, w)`` float32 in [0, 1], at its own size.

    Raises:
        UnreadableImageError: the file is missing, a folder, or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        what = "is a folder, not an image" if path.is_dir() else "does not exist"
        raise UnreadableImageError(f"image {path} {what}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(img, dtype=np.float32) / 65535.0
            if img.mode in ("I", "F"):
                pixels = np.asarray(img, dtype=np.float32)
                top = float(pixels.max()) if pixels.size else 0.0
                return np.clip(pixels / (top if top > 1.0 else 1.0), 0.0, 1.0)
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0  # (h, w)
    except UnidentifiedImageError:
        raise UnreadableImageError(
            f"image {path} is not in an image format Pillow can read"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(f"image {path} cannot be read: {error}") from None
    if gray.size == 0:
        raise UnreadableImageError(f"image {path} is empty ({gray.shape})")
    return gray


def fit_height(pixels: np.ndarray, height: int, *, max_width: int = 1024,
               invert: str = "auto") -> np.ndarray:
    """Resize ``pixels (h, w)`` in [0, 1] to ``(height, W)`` keeping the aspect ratio
    (``W = round(w · height / h)``, at least 1 and at most ``max_width``) and orient it
    bright-ink-on-dark (``invert``: ``"auto"`` inverts when the median is above 0.5).

    Raises:
        ValueError: a bad ``height``, ``max_width``, ``invert`` or image shape.
    """
    if invert not in INVERT:
        raise ValueError(f"invert must be one of {list(INVERT)}, got {invert!r}")
    if height < 1 or max_width < 1:
        raise ValueError(f"height and max_width must be >= 1, got {height} and {max_width}")
    if pixels.ndim != 2 or pixels.size == 0:
        raise ValueError(f"pixels must be a non-empty 2-D (h, w) array, got {pixels.shape}")
    h, w = pixels.shape
    width = min(max_width, max(1, round(w * height / h)))
    image = torch.as_tensor(np.ascontiguousarray(pixels, dtype=np.float32))
    if (h, w) != (height, width):
        image = F.interpolate(
            image[None, None], size=(height, width), mode="bilinear", antialias=True,
            align_corners=False,
        )[0, 0].clamp(0.0, 1.0)  # (H, W)
    if invert == "yes" or (invert == "auto" and float(image.median()) > 0.5):
        image = 1.0 - image
    return image.numpy().astype(np.float32, copy=False)


def read_image(path: str | os.PathLike[str], *, height: int, max_width: int = 1024,
               invert: str = "auto") -> np.ndarray:
    """An image file ready for a captioner: ``(height, W)`` float32 in [0, 1], ink bright.

    Raises:
        UnreadableImageError: see :func:`load_pixels`.
        ValueError: see :func:`fit_height`.
    """
    return fit_height(load_pixels(path), height, max_width=max_width, invert=invert)


def read_images(paths: Sequence[str | os.PathLike[str]], *, height: int, max_width: int = 1024,
                invert: str = "auto") -> tuple[list[tuple[Path, np.ndarray]], list[str]]:
    """Read many files; an unreadable one does not stop the others.

    Returns:
        ``(images, problems)``: ``(path, image)`` of each readable file in order, and one
        message per unreadable file, naming it.
    """
    images, problems = [], []
    for raw in paths:
        path = Path(raw)
        try:
            images.append((path, read_image(path, height=height, max_width=max_width,
                                            invert=invert)))
        except UnreadableImageError as error:
            problems.append(str(error))
    return images, problems


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files (by suffix, see :data:`IMAGE_SUFFIXES`) directly in ``folder``, sorted."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_captions_tsv(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(file name, caption)`` pairs of a ``captions.tsv``, in file order.

    Raises:
        DataFileNotFoundError: the file does not exist.
        DataError: a line that is not UTF-8, has no tab, or an empty side (``PATH:LINE``
            named); a file name given twice; no pairs at all.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError(
            f"{path} does not exist: a caption folder needs a captions.tsv with one "
            "'file name<TAB>caption' per line"
        )
    pairs: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for lineno, line in utf8_lines(path):
        if not line.strip():
            continue
        name, tab, caption = line.partition("\t")
        name, caption = name.strip(), " ".join(caption.split())
        if not tab or not name or not caption:
            raise DataError(
                f"{path}:{lineno}: expected 'file name<TAB>caption', got {line[:60]!r}"
            )
        if name in seen:
            raise DataError(f"{path}:{lineno}: {name!r} was already captioned on line "
                            f"{seen[name]}")
        seen[name] = lineno
        pairs.append((name, caption))
    if not pairs:
        raise DataError(f"{path} holds no captions (it is empty or only blank lines)")
    return pairs


class ImageFolder(CaptionData):
    """``folder:PATH``: a user's images captioned by ``PATH/captions.tsv`` (module doc).

    Raises:
        DataFileNotFoundError: no such folder or no ``captions.tsv``.
        DataError: a malformed ``captions.tsv``, a bad option, fewer than 3 readable images.
    """

    def __init__(self, folder: str | os.PathLike[str], *, height: int = 32,
                 max_width: int = 1024, valid: float = 0.1, test: float = 0.1,
                 invert: str = "auto", seed: int = 0) -> None:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise DataFileNotFoundError(f"caption folder {root} does not exist")
        if invert not in INVERT:
            raise DataError(f"folder:{root}: invert must be one of {list(INVERT)}, "
                            f"got {invert!r}")
        examples: list[CaptionedImage] = []
        self.skipped: list[str] = []
        for name, caption in read_captions_tsv(root / "captions.tsv"):
            try:
                image = read_image(root / name, height=height, max_width=max_width,
                                   invert=invert)
            except UnreadableImageError as error:
                self.skipped.append(str(error))
                continue
            examples.append(CaptionedImage(image, caption, name))
        if self.skipped and not examples:
            raise DataError(
                f"folder:{root}: none of the {len(self.skipped)} images is readable "
                f"(first: {self.skipped[0]})"
            )
        for problem in self.skipped:
            warnings.warn(f"skipped: {problem}", stacklevel=2)
        try:
            self.train, self.valid, self.test = split_by_key(
                examples, lambda e: e.name, valid=valid, test=test, seed=seed
            )
        except DataError as error:
            raise DataError(f"folder:{root}: {error}") from None
        self.image_height = height
        options = f"height={height},invert={invert},max_width={max_width},test={test},valid={valid}"
        self.name = f"folder:{root}:{options}"
        self.description = (
            f"{len(examples)} captioned images from {root}"
            + (f" ({len(self.skipped)} unreadable skipped)" if self.skipped else "")
        )

    def train_epoch(self, seed: int) -> list[CaptionedImage]:
        """The training images (the task shuffles them)."""
        return list(self.train)

    def train_captions(self) -> list[str]:
        """The training captions."""
        return [e.caption for e in self.train]


def parse_folder_spec(spec: str, *, seed: int = 0) -> ImageFolder:
    """``folder:PATH[:height=32,max_width=1024,valid=0.1,test=0.1,invert=auto]``.

    Raises:
        DataError, DataFileNotFoundError: see :class:`ImageFolder`.
    """
    _, path, options = parse_spec(spec)
    where = f"folder:{path}"
    check_options(where, options, _OPTIONS)
    valid, test = split_fractions(options, valid=0.1, test=0.1)
    return ImageFolder(
        path,
        height=int_option(where, options, "height", 32, minimum=1),
        max_width=int_option(where, options, "max_width", 1024, minimum=1),
        valid=valid,
        test=test,
        invert=options.get("invert", "auto"),
        seed=seed,
    )
