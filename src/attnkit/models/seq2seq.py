"""What every sequence-to-sequence model offers the decoders (greedy, beam, sampling).

A model encodes the source once (:meth:`Seq2Seq.start`) and then extends the target one token
at a time (:meth:`Seq2Seq.step`), carrying a :class:`DecodingState`. Beam search reorders the
state's batch rows when it keeps or drops hypotheses. Teacher-forced training calls
``forward(src, src_lengths, tgt_in) -> logits (B, T, V)``.

Shape legend: B batch, S source length, T target length, V target vocabulary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.checks import check_within


class DecodingState(ABC):
    """Everything a model needs to continue decoding a batch of hypotheses."""

    #: the cross-attention of the last step over the source, ``(B, S)``, or ``None``
    attention: Tensor | None = None

    @abstractmethod
    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index (B',)`` (and repeat them as the index says)."""


@dataclass
class Special:
    """Special token ids shared by the models and the decoders."""

    pad: int = 0
    bos: int = 1
    eos: int = 2


class Seq2Seq(nn.Module, ABC):
    """A model that maps a source sequence to a distribution over target sequences."""

    special: Special

    @abstractmethod
    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: ``src (B, S)``, ``src_lengths (B,)``, ``tgt_in (B, T)`` starting
        with ``<bos>`` -> logits ``(B, T, V)`` for the next token at every position."""

    @abstractmethod
    def start(self, src: Tensor, src_lengths: Tensor) -> DecodingState:
        """Encode the source once; the state to decode from."""

    @abstractmethod
    def step(self, state: DecodingState, tokens: Tensor) -> tuple[Tensor, DecodingState]:
        """Feed ``tokens (B,)`` (the previous output, ``<bos>`` first) -> logits ``(B, V)``."""

    def config_dict(self) -> dict[str, Any]:
        """The JSON-able configuration that rebuilds this model (for checkpoints)."""
        return dict(self.config.__dict__)  # type: ignore[attr-defined]


def check_source(src: Tensor, src_lengths: Tensor) -> None:
    """Raise ``ValueError`` unless ``src (B, S)`` is integer and ``src_lengths (B,)`` fits it."""
    if src.dim() != 2 or src.is_floating_point():
        raise ValueError(
            f"src must be (batch, length) token ids, got {src.dtype} {tuple(src.shape)}"
        )
    if src_lengths.shape != (src.shape[0],):
        raise ValueError(
            f"src_lengths must be (batch,) = ({src.shape[0]},), got {tuple(src_lengths.shape)}"
        )
    # Under torch.export the exported graph's caller checks them (attnkit.export's runtimes do).
    if src.shape[1]:
        check_within("src_lengths", src_lengths, 1, src.shape[1], lambda: (
            f"src_lengths must lie in 1..{src.shape[1]}, got {src_lengths.tolist()}"
        ))


def padding_mask(lengths: Tensor, length: int) -> Tensor:
    """``(B, length)`` bool, True at real positions."""
    return torch.arange(length, device=lengths.device) < lengths.unsqueeze(-1)
