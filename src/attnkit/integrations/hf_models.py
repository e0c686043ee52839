"""transformers models for attnkit's own tools (``attnkit explain --hf``, the benchmarks):
build one from a config without downloading anything, or load a local folder with its
tokenizer, on the attnkit backend. Needs the ``hf`` extra.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from attnkit.integrations.transformers import NAME, register

Kind = Literal["encoder", "decoder", "encoder-decoder"]


def build(
    source: str | os.PathLike[str],
    *,
    attn_implementation: str = NAME,
    seed: int = 0,
    **config: Any,
) -> PreTrainedModel:
    """A randomly initialised ``AutoModel`` (float32, eval mode), nothing downloaded.

    Args:
        source: a model type (``"bert"``, ``"gpt2"``, ``"mistral"``, ...) or a local folder
            whose ``config.json`` is used (its weights are not loaded).
        attn_implementation: the attention backend (``"attnkit"``, ``"eager"``, ``"sdpa"``).
        seed: seeds the initialisation.
        config: overrides of the config's fields.

    Raises:
        ValueError: an unknown model type (transformers' message).
    """
    register()
    if Path(source).is_dir():
        model_config = AutoConfig.from_pretrained(source, **config)
    else:
        model_config = AutoConfig.for_model(str(source), **config)
    torch.manual_seed(seed)
    model = AutoModel.from_config(model_config, attn_implementation=attn_implementation)
    return model.eval()


@dataclass
class Loaded:
    """A local transformers folder loaded for reading its attention."""

    model: PreTrainedModel
    tokenizer: Any
    kind: Kind
    # How many tokens the model's positions cover (max_position_embeddings or n_positions;
    # None when the config names no limit, as with T5's relative positions).
    max_positions: int | None


def load(folder: str | os.PathLike[str], *, attn_implementation: str = NAME) -> Loaded:
    """Load the base model (``AutoModel``, eval mode) and tokenizer of a local folder, offline.

    ``kind`` is ``"encoder-decoder"`` for a sequence-to-sequence config, ``"decoder"`` when its
    self-attention is causal (the ``is_causal`` that transformers' attention modules carry),
    else ``"encoder"``.

    Raises:
        FileNotFoundError: ``folder`` is not a folder with a ``config.json``.
        ValueError: transformers cannot load it (its message).
    """
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is not a Hugging Face model folder (no config.json)"
        )
    register()
    hf_logging.disable_progress_bar()  # a command prints its own output
    model = AutoModel.from_pretrained(
        path, attn_implementation=attn_implementation, local_files_only=True
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        kind: Kind = "encoder-decoder"
    elif any(getattr(m, "is_causal", False) is True for m in model.modules()):
        kind = "decoder"
    else:
        kind = "encoder"
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    if positions and "roberta" in str(config.model_type):
        positions -= 2  # RoBERTa's positions start after the padding index (1)
    return Loaded(model, tokenizer, kind, int(positions) if positions else None)
