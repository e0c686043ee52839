"""Captioned images for attnkit's image-captioning application.

>>> from attnkit.data.images import load_caption_data
>>> data = load_caption_data("digits")          # or "digits:min=3,max=6,noise=0.1", "folder:PATH"
>>> data.test[0].caption                         # e.g. 'eight six five two'
>>> data.test[0].image.shape                     # (12, W): bright ink on dark, in [0, 1]

Sources:

- ``digits[:OPTIONS]``: strips of scikit-learn's 1,797 real 8×8 handwritten digits
  (:mod:`attnkit.data.images.digits`), split by source image;
- ``folder:PATH[:OPTIONS]``: your own images captioned by ``PATH/captions.tsv``
  (:mod:`attnkit.data.images.files`).
"""

from __future__ import annotations

from attnkit.data.errors import DataError
from attnkit.data.images.digits import DIGIT_WORDS, DigitStrips, StripStyle, load_digit_images
from attnkit.data.images.examples import (
    CaptionData,
    CaptionedImage,
    ImageBatch,
    collate_images,
    make_batch,
)
from attnkit.data.images.files import (
    ImageFolder,
    UnreadableImageError,
    fit_height,
    image_files,
    read_captions_tsv,
    read_image,
    read_images,
)

__all__ = [
    "DIGIT_WORDS",
    "CaptionData",
    "CaptionedImage",
    "DigitStrips",
    "ImageBatch",
    "ImageFolder",
    "StripStyle",
    "UnreadableImageError",
    "collate_images",
    "describe_caption_sources",
    "fit_height",
    "image_files",
    "load_caption_data",
    "load_digit_images",
    "make_batch",
    "read_captions_tsv",
    "read_image",
    "read_images",
]


def load_caption_data(spec: str = "digits", *, seed: int = 0) -> CaptionData:
    """The captioning data set a spec names (see the module doc).

    Raises:
        TypeError: ``spec`` is not a string.
        DataError: an unknown source or a bad option; see each source for more.
    """
    from attnkit.data.images.digits import parse_digits_spec
    from attnkit.data.images.files import parse_folder_spec

    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str like 'digits' or 'folder:PATH', got "
                        f"{type(spec).__name__}")
    prefix = spec.strip().partition(":")[0]
    if prefix == "digits":
        return parse_digits_spec(spec, seed=seed)
    if prefix == "folder":
        return parse_folder_spec(spec, seed=seed)
    raise DataError(f"unknown caption data {spec!r}; known: {describe_caption_sources()}")


def describe_caption_sources() -> str:
    """One line per caption data source, with an example spec."""
    return (
        "digits (strips of 3-6 real handwritten digits from scikit-learn, e.g. "
        "digits:min=3,max=6,noise=0.1); "
        "folder:PATH (your images with PATH/captions.tsv, e.g. folder:my_images:height=32)"
    )
