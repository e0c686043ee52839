"""``gettext:LANG`` — English user-interface messages and their translations.

Pairs are read from the compiled message catalogues ``/usr/share/locale/LANG/LC_MESSAGES/*.mo``
that Debian packages install (git, binutils, GTK, glib, coreutils, ...), with Python's
:mod:`gettext` (``GNUTranslations._catalog``). ``$ATTNKIT_LOCALE_DIR`` replaces
``/usr/share/locale``.

Only clean, sentence-like pairs are kept: no plural forms, no empty or untranslated strings,
nothing containing ``% { } # $ \\ < > | @ = ~ ^ ` * [ ]`` (format directives such as ``%s``,
``%H:%M``, ``{0}``, ``$VAR``; markup; escapes), hex literals, command-line options or
identifiers; between ``min_words`` (default 3) and 30 English words; a plausible length
ratio. GTK mnemonics (``_Open``) are removed, non-breaking spaces become spaces, and
each English and each translated sentence is kept once (first catalogue in name order wins).

Specs: ``gettext:fr`` and ``gettext:en-fr`` (English -> French), ``gettext:fr-en`` (reverse).
Options: ``valid``, ``test`` (fractions, default 0.05 each), ``min_words``, ``max_words``.
"""

from __future__ import annotations

import gettext
import os
import re
import warnings
from pathlib import Path

from attnkit.data.errors import DataError, MissingPackageError
from attnkit.data.registry import check_options, int_option, register_source
from attnkit.data.splits import Splits, split_by_key, split_fractions

__all__ = ["RECOMMENDED_PACKAGES", "catalogue_files", "gettext_pairs", "load_gettext"]

_OPTIONS = ("valid", "test", "min_words", "max_words")

#: Debian (bookworm) packages whose French catalogues give most of the clean pairs.
RECOMMENDED_PACKAGES = (
    "git", "binutils", "libgtk2.0-common", "libgtk-3-common", "libc-l10n", "iso-codes",
    "xkb-data", "libglib2.0-data", "gsettings-desktop-schemas", "gnupg-l10n",
    "shared-mime-info", "appstream", "coreutils", "tar", "dpkg", "make", "gettext",
)

_UNWANTED = re.compile(
    r"[%{}#$\\<>|@=~^`*\[\]]"  # format directives (%s, %H:%M, {0}, $VAR), markup, escapes
    r"|\b0x|\s--?\w|\w_\w"  # hex literals, command-line options, identifiers
    r"|[\t\n\r]|  "  # layout
)
_MNEMONIC = re.compile(r"(?:(?<=\s)|^)_(?=\w)")


def _locale_root() -> Path:
    return Path(os.environ.get("ATTNKIT_LOCALE_DIR", "/usr/share/locale"))


def catalogue_files(lang: str) -> list[Path]:
    """The ``.mo`` files installed for ``lang``, sorted by name.

    Raises:
        MissingPackageError: there are none (the message lists languages that have some and
            the Debian packages to install).
    """
    directory = _locale_root() / lang / "LC_MESSAGES"
    files = sorted(directory.glob("*.mo")) if directory.is_dir() else []
    if not files:
        have = sorted(p.parent.parent.name for p in _locale_root().glob("*/LC_MESSAGES/*.mo"))
        counts = {code: have.count(code) for code in dict.fromkeys(have)}
        best = sorted(counts, key=lambda c: -counts[c])[:15]
        raise MissingPackageError(
            f"no gettext catalogues for language {lang!r} in {directory}; languages with "
            f"catalogues: {', '.join(best) or 'none'}. Install packages that ship them, e.g.: "
            f"apt-get install -y {' '.join(RECOMMENDED_PACKAGES)}"
        )
    return files


def _clean(text: str) -> str:
    text = text.replace("\u202f", " ").replace("\xa0", " ").strip()
    return _MNEMONIC.sub("", text, count=1)


def _keep(english: str, other: str, min_words: int, max_words: int) -> bool:
    if not english or not other or english == other:
        return False
    if _UNWANTED.search(english) or _UNWANTED.search(other):
        return False
    n_words = len(english.split())
    if not (min_words <= n_words <= max_words) or len(english) > 200:
        return False
    if not english[0].isalpha():
        return False
    if sum(c.isalpha() or c == " " for c in english) < 0.8 * len(english):
        return False
    return 0.5 <= len(other) / len(english) <= 2.5


def gettext_pairs(lang: str, *, min_words: int = 3, max_words: int = 30
                  ) -> list[tuple[str, str]]:
    """Clean ``(english, translation)`` pairs from all catalogues of ``lang`` (see module doc).

    A catalogue that cannot be parsed is skipped with a warning naming it.

    Raises:
        MissingPackageError: no catalogues for ``lang``.
    """
    seen_en: set[str] = set()
    seen_other: set[str] = set()
    pairs = []
    for path in catalogue_files(lang):
        try:
            with path.open("rb") as fh:
                catalog = gettext.GNUTranslations(fh)._catalog
        except (OSError, UnicodeDecodeError, ValueError, IndexError) as exc:
            warnings.warn(f"skipping unreadable gettext catalogue {path}: {exc}", stacklevel=2)
            continue
        for msgid, msgstr in sorted(catalog.items(), key=lambda kv: str(kv[0])):
            if not isinstance(msgid, str) or not isinstance(msgstr, str):
                continue  # plural forms are keyed by (msgid, n)
            english = _clean(msgid.rpartition("\x04")[2])  # drop a msgctxt
            other = _clean(msgstr)
            if english in seen_en or other in seen_other:
                continue
            if _keep(english, other, min_words, max_words):
                seen_en.add(english)
                seen_other.add(other)
                pairs.append((english, other))
    return pairs


@register_source(
    "gettext",
    summary="English <-> LANG user-interface messages from installed gettext catalogues "
    "(/usr/share/locale)",
    example="gettext:fr",
    options=_OPTIONS,
)
def load_gettext(arg: str, options: dict[str, str], seed: int) -> Splits:
    """Load ``gettext:LANG``, ``gettext:en-LANG`` or ``gettext:LANG-en`` (see module doc).

    Raises:
        DataError: a malformed language pair, a bad option, or too few clean pairs.
        MissingPackageError: no catalogues are installed for the language.
    """
    where = f"gettext:{arg}"
    check_options(where, options, _OPTIONS)
    parts = arg.split("-")
    if len(parts) == 1 and parts[0] and parts[0] != "en":
        src, tgt = "en", parts[0]
    elif len(parts) == 2 and "en" in parts and parts[0] != parts[1] and all(parts):
        src, tgt = parts
    else:
        raise DataError(f"{where}: expected LANG, en-LANG or LANG-en (e.g. gettext:fr), "
                        f"got {arg!r}; the catalogues translate from English")
    lang = tgt if src == "en" else src
    valid, test = split_fractions(options)
    min_words = int_option(where, options, "min_words", 3, minimum=1)
    max_words = int_option(where, options, "max_words", 30, minimum=min_words)
    pairs = gettext_pairs(lang, min_words=min_words, max_words=max_words)
    if len(pairs) < 100:
        raise DataError(
            f"{where}: only {len(pairs)} clean pairs in {_locale_root() / lang}; install more "
            f"packages with catalogues, e.g. apt-get install -y {' '.join(RECOMMENDED_PACKAGES)}"
        )
    # Split by the English sentence, so en-fr and fr-en hold the same pairs for a seed.
    train, val, tst = split_by_key(pairs, lambda p: p[0], valid=valid, test=test, seed=seed)
    if src != "en":
        train, val, tst = ([(b, a) for a, b in part] for part in (train, val, tst))
    canon = f"gettext:{src}-{tgt}"
    if options:
        canon += ":" + ",".join(f"{k}={options[k]}" for k in sorted(options))
    return Splits(
        train=train, valid=val, test=tst, name=canon,
        description=(
            f"{len(pairs)} English/{lang} user-interface messages from the gettext catalogues "
            f"in {_locale_root() / lang / 'LC_MESSAGES'} (Debian packages); split by sentence"
        ),
        src_lang=src, tgt_lang=tgt, src_tokenizer_kind="bpe", tgt_tokenizer_kind="bpe",
    )
