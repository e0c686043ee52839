"""What the synthetic speech says: number phrases and short sentences, and transcript clean-up.

- Number phrases: English number words from ``num2words`` ("three hundred and twenty one").
- Short sentences: a small grammar, subject + verb + object + optional place ("my sister
  painted two green boxes near the river"): about 80 words and over 100,000 sentences.

Transcripts are normalised to lower-case letters, apostrophes and single spaces
(:func:`normalize_transcript`); that is the model's alphabet.
"""

from __future__ import annotations

import random
import re
import unicodedata

__all__ = [
    "KINDS",
    "grammar_words",
    "held_out",
    "make_texts",
    "normalize_transcript",
    "number_phrase",
    "number_words",
    "sentence",
    "vocabulary",
]

KINDS = ("numbers", "sentences", "mixed")

SUBJECTS = (
    "the cat", "a dog", "my sister", "the old man", "our teacher", "the little girl",
    "a farmer", "his friend", "the doctor", "we", "they", "she", "my brother", "the children",
)
VERBS = (
    "found", "saw", "painted", "carried", "dropped", "bought", "washed", "opened", "closed",
    "wanted", "sold", "moved", "cleaned", "lost",
)
DETERMINERS = ("the", "a", "two", "three", "four", "my", "her", "some")
ADJECTIVES = ("red", "green", "blue", "black", "white", "yellow", "old", "big", "small", "new")
NOUNS = {  # singular -> plural
    "box": "boxes", "door": "doors", "cup": "cups", "hat": "hats", "kite": "kites",
    "window": "windows", "boat": "boats", "chair": "chairs", "stone": "stones", "book": "books",
    "bag": "bags", "car": "cars",
}
PLACES = (
    "", "", "", "in the garden", "near the river", "at the station", "on monday",
    "after lunch", "in the kitchen", "by the lake", "last night", "this morning",
)
_PLURAL = {"two", "three", "four", "some"}


def number_phrase(rng: random.Random) -> str:
    """English words of a number in ``0..999``: one digit with probability 0.1, two digits
    0.3, three digits 0.6."""
    from num2words import num2words

    draw = rng.random()
    low, high = (0, 9) if draw < 0.1 else (10, 99) if draw < 0.4 else (100, 999)
    return normalize_transcript(num2words(rng.randint(low, high), lang="en"))


def sentence(rng: random.Random) -> str:
    """One sentence of the grammar (see the module docstring)."""
    det = rng.choice(DETERMINERS)
    noun = rng.choice(sorted(NOUNS))
    if det in _PLURAL:
        noun = NOUNS[noun]
    adjective = rng.choice(ADJECTIVES)
    if det == "a" and adjective[0] in "aeiou":
        det = "an"
    words = [rng.choice(SUBJECTS), rng.choice(VERBS), det, adjective, noun, rng.choice(PLACES)]
    return normalize_transcript(" ".join(words))


def make_texts(kind: str, count: int, seed: int, *, exclude: set[str] | None = None) -> list[str]:
    """``count`` texts of ``kind`` (``numbers``, ``sentences`` or ``mixed`` = half each),
    deterministic for ``seed``; texts in ``exclude`` are never drawn (held-out texts; see
    :func:`held_out`).

    Raises:
        ValueError: an unknown ``kind`` or a negative ``count``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = random.Random(seed)
    banned = exclude or set()
    out: list[str] = []
    tries = 0
    while len(out) < count:
        tries += 1
        if tries > 100 * (count + 10):
            raise ValueError(f"cannot draw {count} {kind} texts outside the {len(banned)} excluded")
        use_numbers = kind == "numbers" or (kind == "mixed" and rng.random() < 0.5)
        text = number_phrase(rng) if use_numbers else sentence(rng)
        if text not in banned:
            out.append(text)
    return out


def number_words() -> list[str]:
    """The words of the number phrases (0..999 in English words), sorted."""
    from num2words import num2words

    return sorted({w for n in range(1000) for w in normalize_transcript(num2words(n)).split()})


def grammar_words() -> list[str]:
    """The words of the sentence grammar, sorted."""
    phrases = [*SUBJECTS, *VERBS, *DETERMINERS, "an", *ADJECTIVES, *NOUNS, *NOUNS.values(),
               *PLACES]
    return sorted({w for phrase in phrases for w in phrase.split()})


def vocabulary(kind: str) -> list[str]:
    """Every word the espeak data of ``kind`` can say, sorted.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    words = set()
    if kind in ("numbers", "mixed"):
        words.update(number_words())
    if kind in ("sentences", "mixed"):
        words.update(grammar_words())
    return sorted(words)


def held_out(texts: list[str], *, min_words: int = 3) -> set[str]:
    """The texts of ``texts`` with at least ``min_words`` words: those a training split can
    leave out. Shorter ones ("seven", "forty two") are too few to hold out without removing
    words from training altogether."""
    return {t for t in texts if len(t.split()) >= min_words}


_KEEP = re.compile(r"[^a-z' ]+")
_DIGITS = re.compile(r"[0-9]+")


def _spell_number(match: re.Match[str]) -> str:
    from num2words import num2words

    return f" {num2words(int(match.group()), lang='en')} "


def normalize_transcript(text: str) -> str:
    """Lower-case ASCII letters, apostrophes and single spaces: accents are stripped, runs of
    digits become English number words (``num2words``), hyphens and other punctuation become
    spaces (``"Room 21-B, ok"`` -> ``"room twenty one b ok"``).

    Raises:
        TypeError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    text = _DIGITS.sub(_spell_number, text.replace("’", "'"))
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    ascii_text = ascii_text.lower()
    return " ".join(_KEEP.sub(" ", ascii_text).split())
