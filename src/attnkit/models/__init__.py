"""Models built from attnkit's layers: RNN encoder–decoders, the Transformer, and the
applications' models (Show-Attend-Tell, Listen-Attend-Spell, the Music Transformer, the
pointer-generator)."""

from __future__ import annotations

from typing import Any

from attnkit.models.bert import BertEncoder, load_bert
from attnkit.models.captioner import CaptionerConfig, ShowAttendTell
from attnkit.models.decoding import Decoded, beam_search, greedy, sample
from attnkit.models.las import LAS, LASConfig
from attnkit.models.music_transformer import (
    MusicLSTM,
    MusicLSTMConfig,
    MusicTransformer,
    MusicTransformerConfig,
)
from attnkit.models.pointer_generator import PointerGenerator, PointerGeneratorConfig
from attnkit.models.rnn import ATTENTIONS, RNNConfig, RNNSeq2Seq
from attnkit.models.seq2seq import DecodingState, Seq2Seq, Special
from attnkit.models.transformer import (
    Seq2SeqTransformer,
    TransformerConfig,
    TransformerEncoder,
)

#: model name (as on the command line) -> (config class, model class)
MODELS: dict[str, tuple[type, type[Seq2Seq]]] = {
    "rnnsearch": (RNNConfig, RNNSeq2Seq),
    "rnnenc": (RNNConfig, RNNSeq2Seq),
    "transformer": (TransformerConfig, Seq2SeqTransformer),
}


def build_model(name: str, config: dict[str, Any]) -> Seq2Seq:
    """Rebuild a model from its name and configuration (as saved in a checkpoint).

    Raises:
        ValueError: an unknown model name or configuration field.
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    config_class, model_class = MODELS[name]
    try:
        return model_class(config_class(**config))
    except TypeError as error:
        raise ValueError(f"bad configuration for model {name!r}: {error}") from None


__all__ = [
    "ATTENTIONS",
    "LAS",
    "MODELS",
    "BertEncoder",
    "CaptionerConfig",
    "Decoded",
    "DecodingState",
    "LASConfig",
    "MusicLSTM",
    "MusicLSTMConfig",
    "MusicTransformer",
    "MusicTransformerConfig",
    "PointerGenerator",
    "PointerGeneratorConfig",
    "RNNConfig",
    "RNNSeq2Seq",
    "Seq2Seq",
    "Seq2SeqTransformer",
    "ShowAttendTell",
    "Special",
    "TransformerConfig",
    "TransformerEncoder",
    "beam_search",
    "build_model",
    "greedy",
    "load_bert",
    "sample",
]
