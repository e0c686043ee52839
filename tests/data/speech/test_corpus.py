"""Your own recordings: a folder with transcripts.tsv; bad lines and files are named, not fatal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnkit.data.errors import DataError, DataFileNotFoundError
from attnkit.data.speech import FeatureConfig, load_features, load_speech, write_wav
from attnkit.data.speech import dataset as dataset_module
from attnkit.data.speech.dataset import collate_speech, speech_batches


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNKIT_CACHE_DIR", str(tmp_path / "cache"))


def tone(path, freq: float, seconds: float = 0.3, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    write_wav(path, 0.3 * np.sin(2 * np.pi * freq * t), rate)


def make_folder(root, speakers: int = 4, per_speaker: int = 3) -> None:
    lines = ["# file\ttext\tspeaker"]
    for s in range(speakers):
        for i in range(per_speaker):
            name = f"s{s}_{i}.wav"
            tone(root / name, 200 + 50 * i + 10 * s)
            lines.append(f"{name}\tHello, world {i + 20}!\tspk{s}")
    root.joinpath("transcripts.tsv").write_text("\n".join(lines) + "\n")


def test_folder_splits_by_speaker_and_reports_bad_lines(tmp_path) -> None:
    make_folder(tmp_path, speakers=5)
    tone(tmp_path / "orphan.wav", 300)
    with open(tmp_path / "transcripts.tsv", "a") as fh:
        fh.write("no_tab_here\n")
        fh.write("missing.wav\tsome text\tspk0\n")
        fh.write("s0_0.wav\t   \tspk0\n")
    splits = load_speech(f"folder:{tmp_path}:valid=0.2,test=0.2,seed=1")
    speakers = [{u.speaker for u in part} for part in (splits.train, splits.valid, splits.test)]
    assert all(speakers) and not (speakers[0] & speakers[1] or speakers[0] & speakers[2])
    assert sum(len(p) for p in (splits.train, splits.valid, splits.test)) == 15
    assert {u.text for u in splits.train} <= {"hello world twenty", "hello world twenty one",
                                                "hello world twenty two"}
    problems = "\n".join(splits.problems)
    for expected in ("transcripts.tsv:17: expected", "missing.wav not found", "empty transcript",
                     "orphan.wav: no transcript"):
        assert expected in problems, problems


def test_folder_errors_are_named(tmp_path) -> None:
    with pytest.raises(DataFileNotFoundError, match="speech folder not found"):
        load_speech(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(DataFileNotFoundError, match=r"transcripts\.tsv"):
        load_speech(f"folder:{tmp_path}")
    (tmp_path / "transcripts.tsv").write_text("a.wav\thello\n")
    with pytest.raises(DataError, match="no usable utterance"):
        load_speech(f"folder:{tmp_path}")
    for spec, message in [("mp3:x", "unknown speech data source"), ("espeak:poems", "kind"),
                          ("espeak:n=ten", "option n"), ("espeak:size=3", "unknown options"),
                          (f"folder:{tmp_path}:valid=0.6,test=0.5", "valid \\+ test")]:
        with pytest.raises(DataError, match=message):
            load_speech(spec)


def test_unreadable_audio_is_skipped_and_features_are_cached(tmp_path, monkeypatch) -> None:
    make_folder(tmp_path, speakers=1, per_speaker=3)
    (tmp_path / "s0_1.wav").write_bytes(b"RIFF garbage")
    splits = load_speech(f"folder:{tmp_path}:valid=0,test=0")
    config = FeatureConfig(n_mels=8)
    features = load_features(splits.train, config)
    assert len(features) == 2 and len(features.problems) == 1
    assert "s0_1.wav" in features.problems[0] and "not a readable PCM WAV" in features.problems[0]
    assert features.features[0].shape[1] == 8

    def fail(*args, **kwargs):
        raise AssertionError("features were recomputed instead of read from the cache")

    monkeypatch.setattr(dataset_module, "file_features", fail)
    cached = load_features(splits.train, config)
    assert cached.problems == features.problems
    for a, b in zip(cached.features, features.features, strict=True):
        assert torch.equal(a, b)
    monkeypatch.undo()
    with pytest.raises(DataError, match="none of the 1 audio files"):
        load_features(splits.train[1:2], config, cache=False)


def test_collate_and_batches() -> None:
    feats = [torch.randn(5, 3), torch.randn(2, 3)]
    batch = collate_speech(feats, [[4, 5], [6]])
    assert batch.features.shape == (2, 5, 3) and batch.lengths.tolist() == [5, 2]
    assert torch.equal(batch.features[1, 2:], torch.zeros(3, 3))
    assert batch.tgt_in.tolist() == [[1, 4, 5], [1, 6, 0]]
    assert batch.tgt_out.tolist() == [[4, 5, 2], [6, 2, 0]]
    assert batch.num_target_tokens == 5
    lengths = list(range(50, 0, -1))
    first = speech_batches(lengths, batch_size=8, generator=torch.Generator().manual_seed(3))
    second = speech_batches(lengths, batch_size=8, generator=torch.Generator().manual_seed(3))
    assert first == second and sorted(i for g in first for i in g) == list(range(50))
    assert speech_batches(lengths, batch_size=20) == [list(range(20)), list(range(20, 40)),
                                                     list(range(40, 50))]
    with pytest.raises(ValueError, match=r"one M"):
        collate_speech([torch.randn(3, 3), torch.randn(3, 4)])
