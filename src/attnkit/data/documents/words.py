"""Word-level tokens for the pointer-generator, and its source-extended vocabulary.

The pointer-generator (See et al. 2017) copies *words* from the source, including words its
vocabulary has never seen (a function's parameter names, ``ainv``). Text is cut into words and
runs of punctuation by Hugging Face ``tokenizers``' ``Whitespace`` pre-tokenizer
(``\\w+|[^\\w\\s]+``); the vocabulary is a ``WordLevel`` model trained on the training split.

The extended vocabulary of one example: ids ``0..V-1`` are the vocabulary, and the source's
out-of-vocabulary words get ids ``V, V+1, ...`` in order of first appearance
(:func:`extend_source`). A target word outside the vocabulary that occurs in the source gets
that source word's extended id, so the model can produce it by copying; any other unknown
target word is ``<unk>`` (:func:`extend_target`). Special ids: ``<pad>`` 0, ``<bos>`` 1,
``<eos>`` 2, ``<unk>`` 3 (as :class:`attnkit.data.Tokenizer`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, trainers

__all__ = ["WordTokenizer", "extend_source", "extend_target"]

_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
_FORMAT = "attnkit.word-tokenizer"


class WordTokenizer:
    """Words and punctuation runs with a trained vocabulary; see the module docstring."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, hf: HFTokenizer) -> None:
        ids = [hf.token_to_id(t) for t in _SPECIALS]
        if ids != [0, 1, 2, 3]:
            raise ValueError(f"special tokens {_SPECIALS} must have ids 0..3, got {ids}")
        self._hf = hf
        self._vocab = hf.get_vocab()
        self._pre = pre_tokenizers.Whitespace()

    @classmethod
    def train(
        cls, texts: Iterable[str], *, vocab_size: int = 20000, min_frequency: int = 2
    ) -> WordTokenizer:
        """Learn the ``vocab_size`` most frequent words (specials included) of ``texts``.

        Raises:
            ValueError: ``vocab_size`` < 5, ``min_frequency`` < 1, or no word in ``texts``.
            TypeError: an element of ``texts`` is not a string.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 5:
            raise ValueError(f"vocab_size must be an integer >= 5, got {vocab_size!r}")
        if min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be str, got {type(text).__name__}")
        if not any(t.strip() for t in texts):
            raise ValueError(f"cannot learn a vocabulary from {len(texts)} empty texts")
        hf = HFTokenizer(models.WordLevel(unk_token="<unk>"))
        hf.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(_SPECIALS),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        """``V``: ids ``0..V-1``, special tokens included."""
        return self._hf.get_vocab_size()

    def words(self, text: str) -> list[str]:
        """``text`` cut into words and punctuation runs, as written."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return [word for word, _ in self._pre.pre_tokenize_str(text)]

    def word_id(self, word: str) -> int:
        """The vocabulary id of ``word`` (``unk_id`` when unseen; never a control id)."""
        i = self._vocab.get(word, self.unk_id)
        return self.unk_id if i < self.unk_id else i

    def encode(self, text: str) -> list[int]:
        """Vocabulary ids of the words of ``text`` (unknown words are ``unk_id``)."""
        return [self.word_id(w) for w in self.words(text)]

    def id_to_word(self, i: int) -> str:
        """The word of vocabulary id ``i``. Raises ``ValueError`` outside ``[0, V)``."""
        word = self._hf.id_to_token(int(i))
        if word is None:
            raise ValueError(f"token id {i} outside [0, {self.vocab_size})")
        return word

    def decode(self, ids: Iterable[int], oovs: Sequence[str] = ()) -> str:
        """Text of extended ids: ``V + j`` is ``oovs[j]``; stops at ``<eos>``; drops
        ``<pad>``/``<bos>``.

        Raises:
            ValueError: an id outside ``[0, V + len(oovs))``.
        """
        words = []
        v = self.vocab_size
        for raw in ids.tolist() if hasattr(ids, "tolist") else ids:
            i = int(raw)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            if i >= v:
                if i - v >= len(oovs):
                    raise ValueError(
                        f"token id {i} outside [0, {v + len(oovs)}) (vocabulary {v} + "
                        f"{len(oovs)} source words)"
                    )
                words.append(oovs[i - v])
            else:
                words.append(self.id_to_word(i))
        return detokenize(words)

    def to_json(self) -> str:
        """The tokenizer as a JSON string (for checkpoints)."""
        return json.dumps({"format": _FORMAT, "tokenizer": json.loads(self._hf.to_str())})

    @classmethod
    def from_json(cls, text: str) -> WordTokenizer:
        """Rebuild from :meth:`to_json`. Raises ``ValueError`` for anything else."""
        try:
            payload = json.loads(text)
        except (TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"word tokenizer JSON is not valid JSON: {error}") from None
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"not an attnkit word tokenizer (expected format {_FORMAT!r})")
        return cls(HFTokenizer.from_str(json.dumps(payload["tokenizer"])))

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"


def detokenize(words: Sequence[str]) -> str:
    """Words joined by spaces, without the space before closing punctuation or after an
    opening bracket: ``["f", "(", "x", ")", "."]`` -> ``"f(x)."``."""
    text = " ".join(words)
    text = re.sub(r"\s+([.,;:!?)\]}])", r"\1", text)
    return re.sub(r"([(\[{])\s+", r"\1", text)


def extend_source(tokenizer: WordTokenizer, words: Sequence[str]) -> tuple[list[int], list[str]]:
    """Extended ids of source ``words`` and the list of its out-of-vocabulary words.

    With ``"ainv"`` unseen in training, ``extend_source(tok, ["invert", "ainv"])`` gives
    ``([tok.word_id("invert"), V], ["ainv"])``.
    """
    oovs: list[str] = []
    ids = []
    for word in words:
        i = tokenizer.word_id(word)
        if i == tokenizer.unk_id:
            if word not in oovs:
                oovs.append(word)
            i = tokenizer.vocab_size + oovs.index(word)
        ids.append(i)
    return ids, oovs


def extend_target(tokenizer: WordTokenizer, words: Sequence[str], oovs: Sequence[str]) -> list[int]:
    """Extended ids of target ``words``: an unknown word found in ``oovs`` (the source's) gets
    its copy id ``V + j``; other unknown words are ``unk_id``."""
    out = []
    for word in words:
        i = tokenizer.word_id(word)
        if i == tokenizer.unk_id and word in oovs:
            i = tokenizer.vocab_size + list(oovs).index(word)
        out.append(i)
    return out
