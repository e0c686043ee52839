"""The :class:`Splits` container and deterministic, seed-dependent split helpers.

Splits are made by *key* (a number, a Bible chapter, a source sentence), never by row, so
that everything sharing a key lands in the same split; keys are ranked by a keyed hash
(``blake2b(seed, key)``), which is stable across runs, machines and Python versions.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from attnkit.data.errors import DataError

__all__ = ["Pair", "Splits", "drop_leaked", "split_by_key", "split_fractions"]

Pair = tuple[str, str]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Splits:
    """Train / validation / test sentence pairs of one translation data set.

    Attributes:
        train, valid, test: lists of ``(source, target)`` string pairs.
        name: the canonical spec that produced them, e.g. ``"num2words:de-en"``.
        description: where the data comes from (package, files, licence) in one sentence.
        src_lang, tgt_lang: language codes of the two sides.
        src_tokenizer_kind, tgt_tokenizer_kind: the tokenizer granularity that suits each
            side (``"char"``, ``"word"`` or ``"bpe"``); a hint for tasks, not a constraint.
        src_vocab_size, tgt_vocab_size: the vocabulary size that suits each side's
            ``"bpe"``/``"word"`` tokenizer, or ``None`` (the task's default); also a hint.
    """

    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]
    name: str
    description: str
    src_lang: str = ""
    tgt_lang: str = ""
    src_tokenizer_kind: str = "bpe"
    tgt_tokenizer_kind: str = "bpe"
    src_vocab_size: int | None = None
    tgt_vocab_size: int | None = None

    def __post_init__(self) -> None:
        for split in ("train", "valid", "test"):
            if not getattr(self, split):
                raise DataError(
                    f"data set {self.name!r}: the {split} split is empty "
                    f"(sizes train={len(self.train)}, valid={len(self.valid)}, "
                    f"test={len(self.test)}); use more data or larger split fractions"
                )

    def sizes(self) -> dict[str, int]:
        """Number of pairs per split, e.g. ``{"train": 9000, "valid": 500, "test": 500}``."""
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}

    def __repr__(self) -> str:
        s = self.sizes()
        return (
            f"Splits(name={self.name!r}, train={s['train']}, valid={s['valid']}, "
            f"test={s['test']}, tokenizers=({self.src_tokenizer_kind!r}, "
            f"{self.tgt_tokenizer_kind!r}))"
        )


def split_fractions(options: dict[str, str], *, valid: float = 0.05, test: float = 0.05
                    ) -> tuple[float, float]:
    """Read the ``valid=`` and ``test=`` fractions from spec options (defaults given).

    Raises:
        DataError: a value that is not a number in ``[0, 0.5]``, or ``valid + test >= 1``.
    """
    out = []
    for name, default in (("valid", valid), ("test", test)):
        raw = options.get(name)
        if raw is None:
            out.append(default)
            continue
        try:
            value = float(raw)
        except ValueError:
            raise DataError(f"option {name}={raw!r} is not a number (expected e.g. 0.05)") from None
        if not (0.0 < value <= 0.5) or math.isnan(value):
            raise DataError(f"option {name}={raw!r} must be a fraction in (0, 0.5]")
        out.append(value)
    return out[0], out[1]


def _rank(key: Hashable, seed: int) -> bytes:
    digest = hashlib.blake2b(repr(key).encode("utf-8"), digest_size=8, key=str(seed).encode())
    return digest.digest()


def split_by_key(
    items: Sequence[T],
    key: Callable[[T], Hashable],
    *,
    valid: float,
    test: float,
    seed: int,
) -> tuple[list[T], list[T], list[T]]:
    """Split ``items`` into ``(train, valid, test)`` so that equal keys share a split.

    The distinct keys are ordered by a hash of ``(seed, key)``; the first
    ``round(test * n_keys)`` go to test, the next ``round(valid * n_keys)`` to valid, the
    rest to train (each of valid and test gets at least one key when there are three or
    more keys). Item order inside each split follows ``items``.

    Args:
        items: the items (usually pairs) to split.
        key: maps an item to its split key (its ``repr`` is hashed).
        valid, test: fractions of the keys.
        seed: the same seed gives the same split.

    Raises:
        DataError: fewer than 3 distinct keys.
    """
    keys = list(dict.fromkeys(key(item) for item in items))
    if len(keys) < 3:
        raise DataError(
            f"cannot split {len(items)} items with {len(keys)} distinct keys into "
            "train/valid/test: need at least 3"
        )
    n_test = max(1, round(test * len(keys)))
    n_valid = max(1, round(valid * len(keys)))
    if n_test + n_valid >= len(keys):
        raise DataError(
            f"valid={valid} and test={test} leave no training data for {len(keys)} keys"
        )
    ordered = sorted(keys, key=lambda k: _rank(k, seed))
    where = {k: 2 for k in ordered[:n_test]}
    where.update({k: 1 for k in ordered[n_test:n_test + n_valid]})
    parts: tuple[list[T], list[T], list[T]] = ([], [], [])
    for item in items:
        parts[where.get(key(item), 0)].append(item)
    return parts


def drop_leaked(train: Iterable[Pair], *held_out: list[Pair]) -> list[list[Pair]]:
    """Remove from each held-out split the pairs whose *source* occurs in an earlier split.

    Used where the same sentence recurs under different keys (a refrain in two Bible
    chapters): a test sentence should not have been seen in training or validation.
    Returns the filtered held-out lists in the order given.
    """
    seen = {src for src, _ in train}
    out = []
    for split in held_out:
        kept = [pair for pair in split if pair[0] not in seen]
        seen.update(src for src, _ in split)
        out.append(kept)
    return out
