"""Captioned images, the data-set interface every caption source implements, and batching.

Images are grayscale ``float32`` arrays ``(H, W)`` in [0, 1] with *bright ink on a dark
background* (the digits' convention; :func:`attnkit.data.images.files.read_image` inverts
dark-on-light pictures). A batch pads every image on the right with zeros to the widest one
and keeps the true widths, so a model can mask the padding.

Shape legend: B batch, H image height, W width (the widest in the batch), T caption tokens + 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = ["CaptionData", "CaptionedImage", "ImageBatch", "collate_images", "make_batch"]


@dataclass(frozen=True)
class CaptionedImage:
    """One image with its caption.

    Attributes:
        image: ``(H, W)`` float32 in [0, 1], bright ink on dark.
        caption: the reference caption (words separated by single spaces).
        name: where it came from (a file name, ``"test strip 12"``).
        boxes: for generated strips, ``(top, left, height, width)`` of the object each
            caption word names, in caption order; empty for user images.
        sources: for generated strips, the index of each source digit image.
    """

    image: np.ndarray
    caption: str
    name: str = ""
    boxes: tuple[tuple[int, int, int, int], ...] = ()
    sources: tuple[int, ...] = field(default=())


class CaptionData(ABC):
    """A captioning data set: training examples per epoch, fixed validation and test sets.

    Attributes:
        name: the canonical spec that rebuilds it.
        description: where the data come from, in one sentence.
        image_height: the height H of every image.
        valid, test: the fixed held-out examples.
    """

    name: str
    description: str
    image_height: int
    valid: list[CaptionedImage]
    test: list[CaptionedImage]

    @abstractmethod
    def train_epoch(self, seed: int) -> list[CaptionedImage]:
        """The training examples of one epoch, a function of ``seed`` only."""

    @abstractmethod
    def train_captions(self) -> list[str]:
        """Texts to train the caption tokenizer on (training captions only)."""


@dataclass
class ImageBatch:
    """A padded batch of captioned images.

    Attributes:
        images: ``(B, H, W)`` float32, zero-padded on the right.
        widths: ``(B,)`` int64 true widths.
        tgt_in: ``(B, T)`` ``<bos>`` + caption ids, padded with 0.
        tgt_out: ``(B, T)`` caption ids + ``<eos>``, padded with 0.
        tgt_lengths: ``(B,)`` real positions of ``tgt_out``.
    """

    images: Tensor
    widths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_lengths: Tensor

    def to(self, device: torch.device | str) -> ImageBatch:
        """The same batch with every tensor on ``device``."""
        return ImageBatch(self.images.to(device), self.widths.to(device), self.tgt_in.to(device),
                          self.tgt_out.to(device), self.tgt_lengths.to(device))

    @property
    def num_target_tokens(self) -> int:
        """Real (non-pad) label positions in ``tgt_out``."""
        return int(self.tgt_lengths.sum())


def collate_images(images: Sequence[np.ndarray | Tensor]) -> tuple[Tensor, Tensor]:
    """Stack images of one height, zero-padding on the right: ``(images (B, H, W), widths (B,))``.

    Raises:
        TypeError: an image that is not an array or tensor.
        ValueError: no images, an image that is not 2-D, empty, not finite, or of another height.
    """
    if len(images) == 0:
        raise ValueError("collate_images needs at least one image, got none")
    arrays = []
    for i, image in enumerate(images):
        if isinstance(image, Tensor):
            image = image.detach().cpu().numpy()
        if not isinstance(image, np.ndarray):
            raise TypeError(f"images[{i}] must be a numpy array or tensor, got "
                            f"{type(image).__name__}")
        if image.ndim != 2 or image.size == 0:
            raise ValueError(f"images[{i}] must be a non-empty 2-D (H, W) array, got shape "
                             f"{image.shape}")
        if not np.isfinite(image).all():
            raise ValueError(f"images[{i}] (shape {image.shape}) holds NaN or infinite values")
        arrays.append(image)
    height = arrays[0].shape[0]
    heights = sorted({a.shape[0] for a in arrays})
    if len(heights) > 1:
        raise ValueError(f"images must share one height to be batched, got heights {heights}")
    widths = torch.tensor([a.shape[1] for a in arrays], dtype=torch.long)
    batch = torch.zeros(len(arrays), height, int(widths.max()))  # (B, H, W)
    for i, a in enumerate(arrays):
        batch[i, :, : a.shape[1]] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return batch, widths


def make_batch(examples: Sequence[CaptionedImage], captions: Sequence[Sequence[int]], *,
               bos_id: int = 1, eos_id: int = 2, pad_id: int = 0) -> ImageBatch:
    """A training batch from examples and their caption token ids (without bos/eos).

    Raises:
        ValueError: as :func:`collate_images`, or a different number of captions and examples.
    """
    if len(captions) != len(examples):
        raise ValueError(f"got {len(captions)} captions for {len(examples)} examples")
    images, widths = collate_images([e.image for e in examples])
    longest = max(len(c) for c in captions) + 1
    tgt_in = torch.full((len(captions), longest), pad_id, dtype=torch.long)  # (B, T)
    tgt_out = torch.full((len(captions), longest), pad_id, dtype=torch.long)  # (B, T)
    for i, ids in enumerate(captions):
        tgt_in[i, : len(ids) + 1] = torch.tensor([bos_id, *ids], dtype=torch.long)
        tgt_out[i, : len(ids) + 1] = torch.tensor([*ids, eos_id], dtype=torch.long)
    lengths = torch.tensor([len(c) + 1 for c in captions], dtype=torch.long)
    return ImageBatch(images, widths, tgt_in, tgt_out, lengths)
