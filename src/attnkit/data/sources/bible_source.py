"""``bible:en-es`` / ``bible:es-en`` — King James ↔ Reina-Valera 1909 verse pairs.

Both public-domain translations come from Debian's SWORD packages ``sword-text-kjv``
(module ``engKJV2006eb``) and ``sword-text-sparv`` (module ``spaRV1909eb``), read directly
from their zText files (see :mod:`attnkit.data.sources.sword`). Both modules use the KJV
versification, so verse slot ``i`` is the same verse in both.

Where the Reina-Valera numbers verses differently, its text is shifted or merged against the
KJV slots, so the loader drops, in this order: chapters next to or containing a verse that only
one module leaves empty; chapters with two or more verses whose character-length ratio is
an outlier (more than 4 robust standard deviations of ``log(len_es / len_en)``); and any
remaining single outlier verse. About 30k pairs remain.

Options: ``valid``, ``test`` (fractions of *chapters*, default 0.03 each; a sentence of the
held-out splits that also occurs earlier, e.g. a refrain, is dropped from them),
``max_words`` (drop pairs where a side has more words). The cleaned pairs are cached
under the attnkit cache directory (parsing takes a few seconds).
"""

from __future__ import annotations

import math
import os
import re
import statistics
from dataclasses import replace
from pathlib import Path

from attnkit.data.cache import file_fingerprint, read_cache, write_cache
from attnkit.data.errors import DataError, MissingPackageError
from attnkit.data.registry import check_options, int_option, register_source
from attnkit.data.sources.sword import Verse, read_verses
from attnkit.data.splits import Splits, drop_leaked, split_by_key, split_fractions

__all__ = ["BIBLE_MODULES", "aligned_verses", "load_bible"]

#: language -> (module name, Debian package, title)
BIBLE_MODULES = {
    "en": ("engKJV2006eb", "sword-text-kjv", "King James Version"),
    "es": ("spaRV1909eb", "sword-text-sparv", "Reina-Valera 1909"),
}
_DROP_CAP = {"es"}  # chapter-initial word printed in capitals ("EN el principio")
_OPTIONS = ("valid", "test", "max_words")
_PARSER_VERSION = 2
_OUTLIER_SIGMAS = 4.0
_CAPS_WORD = re.compile(r"\b([^\W\d_])([^\W\d_]+)\b")


def _modules_root() -> Path:
    return Path(os.environ.get("SWORD_PATH", "/usr/share/sword")) / "modules/texts/ztext"


def _module_dir(lang: str) -> Path:
    module, package, _ = BIBLE_MODULES[lang]
    root = _modules_root()
    for candidate in (root / module, root / module.lower()):
        if (candidate / "ot.bzv").is_file():
            return candidate
    raise MissingPackageError(
        f"Bible module {module} not found under {root}; install it with: "
        f"apt-get install -y {package}"
    )


def _undo_drop_cap(text: str) -> str:
    """``"EN el principio"`` -> ``"En el principio"``: the first all-capitals word that is
    not followed by another one (``"ALEPH. BIENAVENTURADOS los"`` keeps the letter name)."""
    words = list(_CAPS_WORD.finditer(text))
    for match, following in zip(words, [*words[1:], None], strict=True):
        word = match.group(0)
        if word.isupper() and not (following and following.group(0).isupper()):
            return text[:match.start()] + word[0] + word[1:].lower() + text[match.end():]
    return text


def _read_language(lang: str) -> list[Verse | None]:
    directory = _module_dir(lang)
    verses = read_verses(directory, "ot") + read_verses(directory, "nt")
    if lang in _DROP_CAP:
        verses = [v if v is None or v.verse != 1 else replace(v, text=_undo_drop_cap(v.text))
                  for v in verses]
    return verses


def _filter_aligned(rows: list[tuple[str, str, str]], empty_one_side: set[tuple[str, int]],
                    chapter_order: list[tuple[str, int]]) -> list[tuple[str, str, str]]:
    """Apply the alignment filter described in the module docstring to ``(ref, en, es)``."""
    position = {c: i for i, c in enumerate(chapter_order)}
    bad: set[tuple[str, int]] = set()
    for book, chapter in empty_one_side:
        i = position[(book, chapter)]
        for j in (i - 1, i, i + 1):
            if 0 <= j < len(chapter_order) and chapter_order[j][0] == book:
                bad.add(chapter_order[j])
    ratios = [math.log(len(b) / len(a)) for _, a, b in rows]
    centre = statistics.median(ratios)
    spread = 1.4826 * statistics.median(abs(r - centre) for r in ratios)  # robust sigma
    outlier = [abs(r - centre) > _OUTLIER_SIGMAS * spread for r in ratios]
    per_chapter: dict[tuple[str, int], int] = {}
    for (ref, _, _), out in zip(rows, outlier, strict=True):
        if out:
            key = _chapter_of(ref)
            per_chapter[key] = per_chapter.get(key, 0) + 1
    bad.update(c for c, n in per_chapter.items() if n >= 2)
    return [row for row, out in zip(rows, outlier, strict=True)
            if not out and _chapter_of(row[0]) not in bad]


def _chapter_of(ref: str) -> tuple[str, int]:
    book, chapter, _ = ref.split(".")
    return book, int(chapter)


def aligned_verses() -> list[tuple[str, str, str]]:
    """Cleaned, aligned ``(osis_ref, english, spanish)`` verses (cached on disk).

    Raises:
        MissingPackageError: a SWORD module is not installed (says which package).
        DataError: a module file is corrupt or not KJV-versified.
    """
    dirs = [_module_dir(lang) for lang in ("en", "es")]
    files = sorted(p for d in dirs for p in d.iterdir() if p.is_file())
    fingerprint = {"version": _PARSER_VERSION, "files": file_fingerprint(files)}
    cached = read_cache("bible_en_es", fingerprint)
    if isinstance(cached, list) and cached:
        return [tuple(row) for row in cached]
    english, spanish = _read_language("en"), _read_language("es")
    rows, empty_one_side, order = [], set(), []
    for en, es in zip(english, spanish, strict=True):
        verse = en or es
        chapter = (verse.book, verse.chapter) if verse else None
        if chapter and (not order or order[-1] != chapter):
            order.append(chapter)
        if en is None or es is None:
            if chapter:
                empty_one_side.add(chapter)
            continue
        if en.ref != es.ref:
            raise DataError(f"Bible modules disagree on verse order: {en.ref} vs {es.ref}")
        rows.append((en.ref, en.text, es.text))
    rows = _filter_aligned(rows, empty_one_side, order)
    write_cache("bible_en_es", fingerprint, rows)
    return rows


@register_source(
    "bible",
    summary="King James <-> Reina-Valera 1909 verse pairs (Debian sword-text-kjv, "
    "sword-text-sparv)",
    example="bible:en-es",
    options=_OPTIONS,
)
def load_bible(arg: str, options: dict[str, str], seed: int) -> Splits:
    """Load ``bible:en-es`` or ``bible:es-en`` (see module doc). Split by chapter.

    Raises:
        DataError: an unknown language pair or bad option.
        MissingPackageError: the SWORD modules are not installed.
    """
    where = f"bible:{arg}"
    check_options(where, options, _OPTIONS)
    pairs_known = ("en-es", "es-en")
    if arg not in pairs_known:
        raise DataError(f"{where}: unknown language pair {arg!r}; available: "
                        f"{', '.join(pairs_known)}")
    src, tgt = arg.split("-")
    valid, test = split_fractions(options, valid=0.03, test=0.03)
    max_words = int_option(where, options, "max_words", 0, minimum=1)
    rows = aligned_verses()
    if max_words:
        rows = [r for r in rows if max(len(r[1].split()), len(r[2].split())) <= max_words]
    train, val, tst = split_by_key(rows, lambda r: _chapter_of(r[0]), valid=valid, test=test,
                                   seed=seed)
    side = {"en": 1, "es": 2}

    def pairs(part):
        return [(r[side[src]], r[side[tgt]]) for r in part]

    train_p = pairs(train)
    val_p, test_p = drop_leaked(train_p, pairs(val), pairs(tst))
    canon = f"bible:{arg}"
    if options:
        canon += ":" + ",".join(f"{k}={options[k]}" for k in sorted(options))
    return Splits(
        train=train_p, valid=val_p, test=test_p, name=canon,
        description=(
            f"{BIBLE_MODULES[src][2]} -> {BIBLE_MODULES[tgt][2]} verse pairs (public domain) "
            f"from Debian's {BIBLE_MODULES['en'][1]} and {BIBLE_MODULES['es'][1]} SWORD "
            "modules; split by chapter"
        ),
        src_lang=src, tgt_lang=tgt, src_tokenizer_kind="bpe", tgt_tokenizer_kind="bpe",
    )
