"""Tests for the bible: source (KJV <-> Reina-Valera 1909 from Debian's SWORD modules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnkit.data.errors import DataError, MissingPackageError
from attnkit.data.translation import load_pairs

MODULES = Path("/usr/share/sword/modules/texts/ztext")
pytestmark = pytest.mark.skipif(
    not (MODULES / "engKJV2006eb").is_dir() or not (MODULES / "spaRV1909eb").is_dir(),
    reason="SWORD Bible modules missing: apt-get install -y sword-text-kjv sword-text-sparv",
)

# Typed from printed editions of the King James Version and the Reina-Valera 1909.
KNOWN = {
    "Gen.1.1": ("In the beginning God created the heaven and the earth.",
                "En el principio crió Dios los cielos y la tierra."),
    "John.3.16": (
        "For God so loved the world, that he gave his only begotten Son, that whosoever "
        "believeth in him should not perish, but have everlasting life.",
        "Porque de tal manera amó Dios al mundo, que ha dado á su Hijo unigénito, para que "
        "todo aquel que en él cree, no se pierda, mas tenga vida eterna."),
    "Ps.23.1": ("A Psalm of David. The LORD is my shepherd; I shall not want.",
                "Salmo de David. Jehová es mi pastor; nada me faltará."),
    "Rev.22.21": ("The grace of our Lord Jesus Christ be with you all. Amen.",
                  "La gracia de nuestro Señor Jesucristo sea con todos vosotros. Amén."),
}


@pytest.fixture(scope="module")
def verses(tmp_path_factory):
    from attnkit.data.sources import bible_source

    cache = tmp_path_factory.mktemp("cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("ATTNKIT_CACHE_DIR", str(cache))
    first = bible_source.aligned_verses()
    assert (cache / "bible_en_es.json.gz").is_file()
    second = bible_source.aligned_verses()  # from the cache
    yield first, second, cache
    patch.undo()


def test_known_verses_in_both_languages(verses) -> None:
    by_ref = {ref: (en, es) for ref, en, es in verses[0]}
    for ref, pair in KNOWN.items():
        assert by_ref[ref] == pair, ref


def test_cache_gives_the_same_verses(verses) -> None:
    assert verses[0] == verses[1]
    assert 28000 < len(verses[0]) < 31102
    assert all("<" not in en and "<" not in es for _, en, es in verses[0])


def test_shifted_chapters_are_dropped(verses) -> None:
    refs = {ref for ref, _, _ in verses[0]}
    # The Reina-Valera numbers Jonah 2 and Numbers 13 differently from the KJV.
    assert not any(r.startswith(("Jonah.2.", "Num.13.")) for r in refs)
    assert "Jonah.3.1" in refs


def test_splits_are_disjoint_deterministic_and_reversible(verses, monkeypatch) -> None:
    monkeypatch.setenv("ATTNKIT_CACHE_DIR", str(verses[2]))  # parsed once, by the fixture
    en_es = load_pairs("bible:en-es:max_words=20", seed=0)
    assert min(en_es.sizes().values()) > 100
    assert not {s for s, _ in en_es.train} & {s for s, _ in en_es.test}
    assert not {s for s, _ in en_es.valid} & {s for s, _ in en_es.test}
    assert all(len(s.split()) <= 20 and len(t.split()) <= 20 for s, t in en_es.train)
    assert load_pairs("bible:en-es:max_words=20", seed=0) == en_es
    es_en = load_pairs("bible:es-en:max_words=20", seed=0)
    assert es_en.train == [(b, a) for a, b in en_es.train]
    assert set(load_pairs("bible:en-es:max_words=20", seed=1).test) != set(en_es.test)


def test_unknown_pair_and_missing_package(monkeypatch, tmp_path) -> None:
    with pytest.raises(DataError, match="unknown language pair 'en-de'; available: en-es"):
        load_pairs("bible:en-de")
    monkeypatch.setenv("SWORD_PATH", str(tmp_path))
    with pytest.raises(MissingPackageError, match="apt-get install -y sword-text-kjv"):
        load_pairs("bible:en-es")
