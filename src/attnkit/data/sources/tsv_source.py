"""``tsv:PATH`` — a user's tab-separated ``source<TAB>target`` file.

The Tatoeba / Anki ("manythings.org") format: UTF-8 (a BOM is allowed), one pair per line,
columns after the second ignored, blank lines skipped. Every other problem (a line without a
tab, an empty side, bytes that are not UTF-8) raises :class:`~attnkit.data.errors.DataError`
with the file name and line number.

Options: ``valid``, ``test`` (fractions, default 0.05 each), ``reverse=1`` (swap columns).
Pairs are split by source sentence, so a sentence repeated in the file stays in one split.
"""

from __future__ import annotations

from pathlib import Path

from attnkit.data.errors import DataError, DataFileNotFoundError
from attnkit.data.registry import check_options, register_source
from attnkit.data.splits import Splits, split_by_key, split_fractions
from attnkit.data.text import utf8_lines

__all__ = ["load_tsv", "read_tsv"]

_OPTIONS = ("valid", "test", "reverse")


def read_tsv(path: str | Path) -> list[tuple[str, str]]:
    """All ``(source, target)`` pairs of a TSV file, in file order.

    Raises:
        DataFileNotFoundError: the file does not exist (or is a directory).
        DataError: the file is empty, or a line is not UTF-8, has no tab, or has an empty
            source or target (the message gives ``PATH:LINE``).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataFileNotFoundError(f"TSV file {path} does not exist"
                                    + (" (it is a directory)" if path.is_dir() else ""))
    pairs = []
    for lineno, line in utf8_lines(path):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(
                f"{path}:{lineno}: no tab; expected 'source<TAB>target', got {line[:60]!r}"
            )
        source, target = (part.strip() for part in line.split("\t")[:2])
        if not source or not target:
            side = "source" if not source else "target"
            raise DataError(f"{path}:{lineno}: empty {side} in {line[:60]!r}")
        pairs.append((source, target))
    if not pairs:
        raise DataError(f"{path}: the file has no pairs (it is empty or only blank lines)")
    return pairs


@register_source(
    "tsv",
    summary="your own source<TAB>target file (Tatoeba/Anki format)",
    example="tsv:pairs.tsv",
    options=_OPTIONS,
)
def load_tsv(arg: str, options: dict[str, str], seed: int) -> Splits:
    """Load ``tsv:PATH[:valid=..,test=..,reverse=1]`` (see module doc).

    Raises:
        DataFileNotFoundError, DataError: see :func:`read_tsv`; also a bad option or fewer
            than 3 distinct source sentences.
    """
    where = f"tsv:{arg}"
    check_options(where, options, _OPTIONS)
    reverse = options.get("reverse", "0").lower()
    if reverse not in ("0", "1", "true", "false", "yes", "no"):
        raise DataError(f"{where}: option reverse={options['reverse']!r} must be 0 or 1")
    pairs = read_tsv(arg)
    if reverse in ("1", "true", "yes"):
        pairs = [(b, a) for a, b in pairs]
    valid, test = split_fractions(options)
    try:
        train, val, tst = split_by_key(pairs, lambda p: p[0], valid=valid, test=test, seed=seed)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    canon = f"tsv:{arg}"
    if options:
        canon += ":" + ",".join(f"{k}={options[k]}" for k in sorted(options))
    return Splits(
        train=train, valid=val, test=tst, name=canon,
        description=f"{len(pairs)} pairs from the tab-separated file {Path(arg).expanduser()}",
        src_tokenizer_kind="bpe", tgt_tokenizer_kind="bpe",
    )
