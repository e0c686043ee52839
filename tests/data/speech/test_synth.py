"""espeak-ng synthesis: deterministic voices and texts, held-out splits, an atomic cache."""

from __future__ import annotations

import shutil

import pytest

from attnkit.data.speech import load_speech, read_wav
from attnkit.data.speech.synth import SPLIT_VOICES, Voice, draw_voices, synthesize
from attnkit.data.speech.text import held_out, make_texts, normalize_transcript

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNKIT_CACHE_DIR", str(tmp_path / "cache"))


def test_split_voices_are_disjoint() -> None:
    splits = list(SPLIT_VOICES.values())
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not set(a.variants) & set(b.variants)
            assert not set(a.speeds) & set(b.speeds)
            assert not set(a.pitches) & set(b.pitches)


def test_voices_and_texts_are_deterministic_for_a_seed() -> None:
    assert draw_voices("test", 20, 3) == draw_voices("test", 20, 3)
    assert draw_voices("test", 20, 3) != draw_voices("test", 20, 4)
    assert {v.variant for v in draw_voices("test", 50, 0)} <= set(SPLIT_VOICES["test"].variants)
    assert make_texts("mixed", 30, 5) == make_texts("mixed", 30, 5)
    assert make_texts("mixed", 30, 5) != make_texts("mixed", 30, 6)
    banned = held_out(make_texts("sentences", 50, 1))
    assert not banned & set(make_texts("sentences", 200, 2, exclude=banned))
    with pytest.raises(ValueError, match="kind"):
        make_texts("poems", 3, 0)


def test_transcripts_are_normalised() -> None:
    assert normalize_transcript("  Twenty-One,  Café  ") == "twenty one cafe"
    assert normalize_transcript("It’s 'ok'") == "it's 'ok'"
    assert normalize_transcript("Room 42, floor 3") == "room forty two floor three"


@needs_espeak
def test_synthesis_is_cached_and_atomic(tmp_path) -> None:
    voice = Voice("en-us", "m3", 160, 50)
    path = synthesize("seven", voice)
    assert str(path).startswith(str(tmp_path / "cache"))
    audio = read_wav(path)
    assert audio.sample_rate == 22050 and 0.2 < audio.seconds < 3
    stamp = path.stat().st_mtime_ns
    assert synthesize("seven", voice) == path and path.stat().st_mtime_ns == stamp
    assert not list(path.parent.glob(".*"))  # no temporary file left behind
    with pytest.raises(ValueError, match="voice"):
        synthesize("seven", Voice("xx-nonexistent", "m3", 160, 50), tmp_path / "x.wav")


@needs_espeak
def test_load_speech_holds_out_voices_and_texts() -> None:
    splits = load_speech("espeak:mixed:n=12,valid=4,test=6,seed=1", progress=False)
    again = load_speech("espeak:mixed:n=12,valid=4,test=6,seed=1", progress=False)
    assert [u.path for u in splits.train] == [u.path for u in again.train]
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (12, 4, 6)
    train_speakers = {u.speaker.split()[0].split("+")[1] for u in splits.train}
    test_speakers = {u.speaker.split()[0].split("+")[1] for u in splits.test}
    assert not train_speakers & test_speakers
    assert not held_out([u.text for u in splits.test]) & {u.text for u in splits.train}
    assert all(u.path.is_file() for u in splits.train + splits.valid + splits.test)
