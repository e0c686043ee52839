"""Subword, word and character tokenizers trained on a training split (HF ``tokenizers``).

Every tokenizer reserves the same special ids: ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2,
``<unk>`` = 3. Spaces are kept as the ``▁`` marker (SentencePiece's Metaspace), so
``decode(encode(text)) == text`` for any text whose characters were seen in training (single,
repeated, leading and trailing spaces included), and :meth:`Tokenizer.tokens` gives readable
labels (``"vierundzwanzig zwei"`` -> ``["▁vier", "und", "zwanzig", "▁zwei"]``) for heatmaps;
a word is the same token at the start of a text as after a space (``bpe``, ``word``).

Kinds:
    ``"bpe"``: byte-pair encoding inside space-separated words (real text);
    ``"word"``: one token per space-separated word, punctuation attached (small closed
    vocabularies such as number words);
    ``"char"``: one token per character, the space shown as ``▁`` (number words, spelling).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

__all__ = ["BOS", "EOS", "KINDS", "PAD", "SPECIAL_TOKENS", "UNK", "Tokenizer"]

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3
KINDS = ("bpe", "word", "char")
_FORMAT = "attnkit.tokenizer"
_FORMAT_VERSION = 1
_SPACE = "▁"


def _build(kind: str) -> HFTokenizer:
    if kind in ("bpe", "word"):
        model = models.BPE(unk_token=UNK) if kind == "bpe" else models.WordLevel(unk_token=UNK)
        tok = HFTokenizer(model)
        # A ``▁`` before the first word too, so that a word is the same token at the start of
        # a text as after a space: otherwise "forty-two" alone and the "▁forty-two" of "three
        # hundred and forty-two" are two tokens, and one seen only in the other place is
        # unknown. :meth:`Tokenizer.decode` removes exactly that one space again.
        tok.normalizer = normalizers.Prepend(_SPACE)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(_SPACE, prepend_scheme="never", split=True)
        tok.decoder = decoders.Metaspace(_SPACE, prepend_scheme="never", split=True)
    else:  # char
        tok = HFTokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(_SPACE, prepend_scheme="never", split=False),
            pre_tokenizers.Split(Regex("."), behavior="isolated"),
        ])
        tok.decoder = decoders.Metaspace(_SPACE, prepend_scheme="never", split=False)
    tok.encode_special_tokens = True  # a literal "<eos>" in the text is text, not EOS
    return tok


class Tokenizer:
    """A trained tokenizer with fixed special ids (``pad_id`` 0, ``bos_id`` 1, ``eos_id`` 2,
    ``unk_id`` 3). Build one with :meth:`train` or :meth:`from_json`."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, hf: HFTokenizer, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        ids = [hf.token_to_id(t) for t in SPECIAL_TOKENS]
        if ids != [0, 1, 2, 3]:
            raise ValueError(f"special tokens {SPECIAL_TOKENS} must have ids 0..3, got {ids}")
        self._hf = hf
        self.kind = kind
        # tokenizers trained before the leading ``▁`` have no normalizer: nothing to remove
        self._prefixed = isinstance(hf.normalizer, normalizers.Prepend)

    @classmethod
    def train(cls, texts: Iterable[str], *, kind: str = "bpe", vocab_size: int = 8000,
              min_frequency: int = 1) -> Tokenizer:
        """Train on ``texts`` (the training split only).

        Args:
            texts: strings to learn the vocabulary from.
            kind: ``"bpe"``, ``"word"`` or ``"char"``.
            vocab_size: upper bound on the vocabulary, special tokens included (``bpe`` and
                ``word``; ``char`` keeps every character seen).
            min_frequency: ignore pieces seen fewer times (``bpe``/``word``).

        Raises:
            ValueError: unknown ``kind``, ``vocab_size`` < 5, ``min_frequency`` < 1, or no
                non-empty text.
            TypeError: an element of ``texts`` is not a string.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if vocab_size < len(SPECIAL_TOKENS) + 1:
            raise ValueError(f"vocab_size must be >= 5, got {vocab_size}")
        if min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be str, got {type(text).__name__}")
        if not any(texts):
            raise ValueError(f"cannot train a tokenizer on {len(texts)} empty texts")
        hf = _build(kind)
        special = list(SPECIAL_TOKENS)
        if kind == "bpe":
            alphabet = sorted({c for text in texts for c in text.replace(" ", _SPACE)})
            trainer = trainers.BpeTrainer(
                vocab_size=max(vocab_size, len(alphabet) + len(special)),
                min_frequency=min_frequency, special_tokens=special,
                initial_alphabet=alphabet, show_progress=False,
            )
        elif kind == "word":
            trainer = trainers.WordLevelTrainer(vocab_size=vocab_size,
                                                min_frequency=min_frequency,
                                                special_tokens=special, show_progress=False)
        else:
            trainer = trainers.WordLevelTrainer(special_tokens=special, show_progress=False)
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf, kind)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (embedding tables need this many rows)."""
        return self._hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without ``<bos>``/``<eos>`` (batching adds those).

        Unseen pieces become ``unk_id``; so does text spelling a control token (a literal
        ``"<eos>"`` word), which never encodes to ``<pad>``/``<bos>``/``<eos>``.

        Raises:
            TypeError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return self._no_control(self._hf.encode(text, add_special_tokens=False).ids)

    def _no_control(self, ids: list[int]) -> list[int]:
        # Text never yields <pad>/<bos>/<eos>: a literal "<eos>" word is an unknown word.
        return [self.unk_id if i < self.unk_id else i for i in ids]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for many texts at once (faster).

        Raises:
            TypeError: an element is not a string.
        """
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be str, got {type(text).__name__}")
        encoded = self._hf.encode_batch(list(texts), add_special_tokens=False)
        return [self._no_control(e.ids) for e in encoded]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: stops at the first ``<eos>``, drops ``<pad>`` and ``<bos>``;
        ``<unk>`` stays visible as ``"<unk>"``.

        Accepts a list of ints or a 1-D integer tensor.

        Raises:
            ValueError: an id outside ``[0, vocab_size)``.
        """
        out = []
        for raw in (ids.tolist() if hasattr(ids, "tolist") else ids):
            i = int(raw)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} outside [0, {self.vocab_size})")
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(i)
        text = self._hf.decode(out, skip_special_tokens=False)
        return text[1:] if self._prefixed and text.startswith(" ") else text

    def tokens(self, text: str) -> list[str]:
        """The token strings of ``text`` (``▁`` marks a space), one per id of
        :meth:`encode`; for labelling attention heatmaps."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return self._hf.encode(text, add_special_tokens=False).tokens

    def unknown(self, text: str) -> list[str]:
        """The pieces of ``text`` this tokenizer has no token for (each becomes ``unk_id``), in
        order: characters or words its training data never showed it, e.g. ``["D"]`` for
        ``"Dreihundert"`` with a lower-case vocabulary.

        Raises:
            TypeError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        encoding = self._hf.encode(text, add_special_tokens=False)
        spans = zip(encoding.ids, encoding.offsets, strict=True)
        # a word's span includes the space before it (the "▁" of its token)
        return [text[start:end].strip() or text[start:end]
                for i, (start, end) in spans if i <= self.unk_id]

    def id_to_token(self, i: int) -> str:
        """The token string of one id (``"<unk>"`` style for specials)."""
        token = self._hf.id_to_token(int(i))
        if token is None:
            raise ValueError(f"token id {i} outside [0, {self.vocab_size})")
        return token

    def to_json(self) -> str:
        """Everything needed to rebuild this tokenizer, as a JSON string (for checkpoints)."""
        payload: dict[str, Any] = {
            "format": _FORMAT, "version": _FORMAT_VERSION, "kind": self.kind,
            "tokenizer": json.loads(self._hf.to_str()),
        }
        return json.dumps(payload, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        """Rebuild a tokenizer from :meth:`to_json` output.

        Raises:
            ValueError: not valid JSON, not an attnkit tokenizer, or an unsupported version.
        """
        try:
            payload = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"tokenizer JSON is not valid JSON: {exc}") from None
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"not an attnkit tokenizer (expected format {_FORMAT!r})")
        if payload.get("version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported tokenizer version {payload.get('version')!r}; "
                             f"this attnkit reads version {_FORMAT_VERSION}")
        try:
            hf = HFTokenizer.from_str(json.dumps(payload["tokenizer"]))
        except Exception as exc:  # tokenizers raises its own exception type
            raise ValueError(f"tokenizer JSON could not be loaded: {exc}") from None
        hf.encode_special_tokens = True
        return cls(hf, payload.get("kind", ""))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"
