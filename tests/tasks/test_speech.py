"""Speech recognition end to end on tiny espeak-ng data: it learns, reloads, transcribes files
(a bad one is named, the others still transcribed), aligns and scores with jiwer."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.data.speech import FeatureConfig, file_features, write_wav
from attnkit.data.speech.synth import draw_voices, synthesize
from attnkit.tasks.metrics import recognition_scores
from attnkit.tasks.speech import (
    SpeechSettings,
    Transcriber,
    prepare,
    train_recognizer,
)
from attnkit.training import TrainConfig, Trainer, load_checkpoint

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def words(tmp_path_factory) -> Path:
    """A user-style folder: ten digit words said by eight espeak-ng voices, transcripts.tsv."""
    root = tmp_path_factory.mktemp("words")
    lines = []
    for split, count in (("train", 6), ("valid", 2)):
        for i, voice in enumerate(draw_voices(split, count, 0)):
            for word in WORDS:
                synthesize(word, voice, root / f"{split}{i}_{word}.wav")
                lines.append(f"{split}{i}_{word}.wav\t{word}\t{split}{i}")
    (root / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNKIT_CACHE_DIR", str(tmp_path / "cache"))


def settings(root: Path, **kw) -> SpeechSettings:
    features = dataclasses.asdict(FeatureConfig(n_mels=20, hop_length=320))
    return SpeechSettings(
        data=f"folder:{root}:valid=0.25,test=0", listener_dim=48, listener_layers=2,
        speller_dim=48, embed_dim=16, attention_dim=24, location_channels=4, location_kernel=5,
        dropout=0.0, batch_size=16, label_smoothing=0.0, eval_examples=40, features=features,
        **kw,
    )


def test_speech_scores_are_jiwer_edit_rates() -> None:
    scores = recognition_scores(["a x c", "hello"], ["a b c", "hello"])
    assert scores["wer"] == pytest.approx(100 * 1 / 4)
    assert scores["cer"] == pytest.approx(100 * 1 / 10)
    assert scores["exact"] == 50.0
    with pytest.raises(ValueError, match="as many"):
        recognition_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        recognition_scores(["a"], [" "])


def test_tiny_las_learns_and_beats_chance_on_unheard_speakers(words) -> None:
    s = settings(words)
    task, model = prepare(s, progress=False)
    valid = task.valid
    heard = {u.speaker for u in task.splits.train}
    assert heard and not heard & {u.speaker for u in task.splits.valid}
    constant = min(recognition_scores([w] * len(valid.texts), valid.texts)["cer"] for w in WORDS)
    result = Trainer(
        model, task, TrainConfig(lr=1e-2, max_steps=60, log_every=10, warmup_steps=5)
    ).fit()
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0], losses
    after = Transcriber(model.eval(), task.tokenizer, s).evaluate(valid.features, valid.texts)
    assert after["exact"] > 30 and after["cer"] < constant - 20, (after, constant)  # chance: 10 %


def test_reload_transcribe_files_and_align(words, tmp_path) -> None:
    s = settings(words)
    run = tmp_path / "run"
    _, trained, task = train_recognizer(
        s, TrainConfig(lr=3e-3, max_steps=4, log_every=2), run, progress=False
    )
    assert any("too few" in p for p in task.splits.problems)  # test=0: said, not hidden
    loaded = Transcriber.load(run)
    checkpoint = load_checkpoint(run / "best")
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, checkpoint.state_dict()[name]), name
    assert loaded.settings == s and loaded.tokenizer.vocab_size == trained.tokenizer.vocab_size

    good = words / "valid0_seven.wav"
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    results = loaded.transcribe_files([good, bad, tmp_path / "missing.wav"], beam=2)
    assert isinstance(results[0].text, str) and results[0].error is None
    assert results[1].text is None and "bad.wav" in results[1].error
    assert "missing.wav" in results[2].error

    features = file_features(good, loaded.features)
    alignment = loaded.align(features, "one two")
    assert alignment.characters[-1] == "</s>" and len(alignment.characters) == 8
    assert alignment.weights.shape[0] == 8
    torch.testing.assert_close(alignment.weights.sum(-1), torch.ones(8))
    assert alignment.seconds_per_state == pytest.approx(4 * 320 / 16000)
    picture = loaded.plot_alignment(alignment, tmp_path / "a.png", title="one two")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_not_a_speech_checkpoint(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        Transcriber.load(tmp_path / "nothing")


def test_a_44_khz_user_file_is_resampled_to_the_model_rate(tmp_path) -> None:
    t = np.arange(44100) / 44100
    write_wav(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * 300 * t), 44100)
    config = FeatureConfig(n_mels=20, hop_length=320, trim_db=None)
    assert file_features(tmp_path / "tone.wav", config).shape == (1 + 16000 // 320, 20)
