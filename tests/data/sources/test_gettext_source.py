"""Tests for the gettext: source (English <-> LANG user-interface messages)."""

from __future__ import annotations

import gettext
import struct
from pathlib import Path

import pytest

from attnkit.data.errors import DataError, MissingPackageError
from attnkit.data.sources.gettext_source import gettext_pairs
from attnkit.data.translation import load_pairs

SYSTEM_FR = sorted(Path("/usr/share/locale/fr/LC_MESSAGES").glob("*.mo"))


def _write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU .mo file (little-endian, revision 0) written from the format description."""
    items = sorted(messages.items())
    ids = [k.encode() for k, _ in items]
    strs = [v.encode() for _, v in items]
    n = len(items)
    start = 28 + 16 * n
    data = b""
    id_table, str_table = [], []
    for blob, table in [(b, id_table) for b in ids] + [(b, str_table) for b in strs]:
        table.append((len(blob), start + len(data)))
        data += blob + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    tables = b"".join(struct.pack("<2I", *e) for e in id_table + str_table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + tables + data)


@pytest.fixture
def locale_dir(tmp_path: Path, monkeypatch) -> Path:
    sentences = {f"Could not open the file number {i}": f"Impossible d’ouvrir le fichier {i}"
                 for i in range(200)}
    sentences.update({
        "": "Content-Type: text/plain; charset=UTF-8\n",  # the header entry
        "Cannot read %s file": "Impossible de lire le fichier %s",  # format string
        "Remove {name} now": "Supprimer {name} maintenant",  # brace format
        "_Open the file": "_Ouvrir le fichier",  # GTK mnemonic
        "Save the file\u00a0now": "Enregistrer le fichier\u00a0maintenant",
        "menu\x04Close the window": "Fermer la fenêtre",  # msgctxt
        "Quit": "Quitter",  # too short
        "Use the --force option": "Utilisez l’option --force",  # command-line option
        "Untranslated message stays": "Untranslated message stays",
        "Second catalogue message here": "Message du premier catalogue ici",
    })
    _write_mo(tmp_path / "fr" / "LC_MESSAGES" / "a.mo", sentences)
    _write_mo(tmp_path / "fr" / "LC_MESSAGES" / "b.mo",
              {"Second catalogue message here": "Autre traduction ici",
               "A message only in b": "Un message seulement dans b"})
    monkeypatch.setenv("ATTNKIT_LOCALE_DIR", str(tmp_path))
    return tmp_path


def test_clean_pairs_from_a_written_catalogue(locale_dir: Path) -> None:
    pairs = dict(gettext_pairs("fr"))
    assert pairs["Could not open the file number 7"] == "Impossible d’ouvrir le fichier 7"
    assert pairs["Open the file"] == "Ouvrir le fichier"
    assert pairs["Save the file now"] == "Enregistrer le fichier maintenant"
    assert pairs["Close the window"] == "Fermer la fenêtre"
    assert pairs["Second catalogue message here"] == "Message du premier catalogue ici"  # first catalogue wins
    assert pairs["A message only in b"] == "Un message seulement dans b"
    for dropped in ("Cannot read %s file", "Remove {name} now", "Quit",
                    "Use the --force option", "Untranslated message stays", ""):
        assert dropped not in pairs
    assert len(pairs) == 205


def test_written_catalogue_splits(locale_dir: Path) -> None:
    splits = load_pairs("gettext:fr")
    assert (splits.src_lang, splits.tgt_lang) == ("en", "fr")
    assert all(splits.sizes().values())
    assert not set(splits.train) & set(splits.test)
    reverse = load_pairs("gettext:fr-en")
    assert reverse.test == [(b, a) for a, b in splits.test]


def test_missing_language_names_the_packages(locale_dir: Path) -> None:
    with pytest.raises(MissingPackageError, match=r"no gettext catalogues for language 'zz'"
                       r".*languages with catalogues: fr.*apt-get install -y git"):
        load_pairs("gettext:zz")


def test_bad_pairs_are_explained(locale_dir: Path) -> None:
    with pytest.raises(DataError, match="expected LANG, en-LANG or LANG-en"):
        load_pairs("gettext:de-fr")
    with pytest.raises(DataError, match="only 0 clean pairs"):
        load_pairs("gettext:fr:min_words=29")


@pytest.mark.skipif(not SYSTEM_FR, reason="no French gettext catalogues installed in "
                    "/usr/share/locale/fr (install e.g. git, binutils, libgtk-3-common)")
def test_system_french_catalogues() -> None:
    splits = load_pairs("gettext:fr", seed=0)
    assert sum(splits.sizes().values()) > 1000
    assert load_pairs("gettext:fr", seed=0) == splits
    assert not {s for s, _ in splits.train} & {s for s, _ in splits.test}
    assert not any("%" in s or "{" in s for pair in splits.train for s in pair)
    # Independent check: the catalogues, read by Python's gettext, hold each pair (up to
    # surrounding whitespace and non-breaking spaces).
    def norm(text: str) -> str:
        return text.replace("\u202f", " ").replace("\xa0", " ").strip()

    held = set()
    for path in SYSTEM_FR:
        with path.open("rb") as fh:
            catalog = gettext.GNUTranslations(fh)._catalog
        held.update((norm(k), norm(v)) for k, v in catalog.items() if isinstance(k, str))
    sample = splits.test[:300]
    assert sum(pair in held for pair in sample) >= 0.95 * len(sample)
