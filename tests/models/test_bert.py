"""attnkit's own layers running all-MiniLM-L6-v2 equal the sentence-transformers package."""

from __future__ import annotations

import json

import pytest
import torch

from attnkit.models.bert import default_model_path, load_bert

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Two men pushed carts through the woods.",
    "Attention is all you need, they said; the rest is details.",
    "",
]


@pytest.fixture(scope="module")
def ours():
    return load_bert()


def test_embeddings_equal_sentence_transformers(ours) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    theirs = sentence_transformers.SentenceTransformer(str(default_model_path()), device="cpu")
    want = torch.as_tensor(theirs.encode(SENTENCES, convert_to_numpy=True))
    got = ours.encode(SENTENCES)
    assert got.shape == want.shape == (len(SENTENCES), 384)
    assert (got - want).abs().max() < 1e-5
    assert torch.nn.functional.cosine_similarity(got, want).min() >= 0.99999


def test_published_similarity(ours) -> None:
    a, b = ours.encode(["A man is eating food.", "A man is eating a piece of bread."])
    assert round(float(a @ b), 3) == 0.755


def test_layers_are_attnkit_multihead_attention(ours) -> None:
    from attnkit import MultiHeadAttention

    layers = [m for m in ours.modules() if isinstance(m, MultiHeadAttention)]
    assert len(layers) == 6 and all(m.num_heads == 12 for m in layers)
    assert ours.tokens("Hello world")[0] == "[CLS]"


def test_bad_checkpoint_folders(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config.json not found"):
        load_bert(tmp_path)
    folder = default_model_path()
    for name in ("model.safetensors", "tokenizer.json"):
        (tmp_path / name).symlink_to(folder / name)
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 7
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"does not match a BERT of this config: missing \['encoder.layer.6"
    ):
        load_bert(tmp_path)
