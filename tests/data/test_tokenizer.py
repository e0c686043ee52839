"""Tests for attnkit.data.tokenizer (trained with the HF ``tokenizers`` package)."""

from __future__ import annotations

import pytest
import torch

from attnkit.data.tokenizer import KINDS, Tokenizer

TEXTS = [
    "vierundzwanzig",
    "nine thousand, nine hundred and ninety-nine",
    "In the beginning God created the heaven and the earth.",
    "Impossible d’ouvrir le fichier : « données »  (deux espaces)",
    "¿Con qué limpiará el joven su camino?",
    " leading and trailing spaces ",
]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_keeps_text_and_spacing_exactly(kind: str) -> None:
    tok = Tokenizer.train(TEXTS, kind=kind, vocab_size=300)
    for text in TEXTS:
        ids = tok.encode(text)
        assert all(isinstance(i, int) and i > 3 for i in ids), text  # no specials, no <unk>
        assert tok.decode(ids) == text
        assert len(tok.tokens(text)) == len(ids)


@pytest.mark.parametrize("kind", KINDS)
def test_special_ids_are_fixed(kind: str) -> None:
    tok = Tokenizer.train(TEXTS, kind=kind, vocab_size=300)
    assert [tok.id_to_token(i) for i in range(4)] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.vocab_size > 4
    # A literal "<eos>" in the text is text, not the end-of-sequence id.
    assert tok.eos_id not in tok.encode("<eos>")


def test_char_and_word_tokens_match_an_independent_split() -> None:
    text = "nine thousand, nine hundred"
    chars = Tokenizer.train(TEXTS, kind="char")
    assert chars.tokens(text) == list(text.replace(" ", "▁"))
    words = Tokenizer.train(TEXTS, kind="word", vocab_size=300)
    assert words.tokens(text) == ["▁nine", "▁thousand,", "▁nine", "▁hundred"]


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_a_word_is_one_token_at_the_start_and_after_a_space(kind: str) -> None:
    # "forty-two" only ever follows other words in training; alone it must still be known.
    tok = Tokenizer.train(["three hundred and forty-two", "forty-one"], kind=kind,
                          vocab_size=60)
    alone, inside = tok.encode("forty-two"), tok.encode("three hundred and forty-two")
    assert tok.unk_id not in alone and inside[-len(alone):] == alone
    assert tok.decode(alone) == "forty-two"


def test_bpe_respects_vocab_size_and_marks_unknowns() -> None:
    tok = Tokenizer.train(TEXTS * 3, kind="bpe", vocab_size=120)
    assert tok.vocab_size <= 120
    assert tok.encode("Ω")[-1] == tok.unk_id  # a character never seen in training
    assert tok.decode(tok.encode("Ω")) == "<unk>"


def test_decode_stops_at_eos_and_drops_pad_and_bos() -> None:
    tok = Tokenizer.train(TEXTS, kind="char")
    ids = tok.encode("vier")
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, *tok.encode("und"), tok.pad_id]) == "vier"
    assert tok.decode(torch.tensor([tok.bos_id, *ids, tok.pad_id, tok.pad_id])) == "vier"
    with pytest.raises(ValueError, match="token id 999 outside"):
        tok.decode([999])


@pytest.mark.parametrize("kind", KINDS)
def test_json_round_trip(kind: str) -> None:
    tok = Tokenizer.train(TEXTS, kind=kind, vocab_size=300)
    again = Tokenizer.from_json(tok.to_json())
    assert again == tok and again.kind == kind and again.vocab_size == tok.vocab_size
    for text in TEXTS:
        assert again.encode(text) == tok.encode(text)
    assert again.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        Tokenizer.train(TEXTS, kind="sentencepiece")
    with pytest.raises(ValueError, match="empty texts"):
        Tokenizer.train(["", ""])
    with pytest.raises(TypeError, match=r"texts\[1\] must be str"):
        Tokenizer.train(["a", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not valid JSON"):
        Tokenizer.from_json("{nope")
    with pytest.raises(ValueError, match="not an attnkit tokenizer"):
        Tokenizer.from_json('{"format": "other"}')
    tok = Tokenizer.train(TEXTS, kind="char")
    with pytest.raises(TypeError, match="text must be str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]


def test_unknown_names_the_pieces_that_become_unk() -> None:
    words = Tokenizer.train(["three hundred", "forty-two"], kind="word", vocab_size=300)
    assert words.unknown("three thousand hundred zwei") == ["thousand", "zwei"]
    chars = Tokenizer.train(["drei", "vier"], kind="char")
    assert chars.unknown("Dreißig") == ["D", "ß", "g"]
    assert chars.unknown("vier") == [] and chars.unknown("") == []
    # an independent count: exactly the pieces that encode() turns into unk_id
    assert chars.encode("Dreißig").count(Tokenizer.unk_id) == 3
