"""``attnkit train speech`` and ``attnkit transcribe`` on a tiny folder of espeak-ng words."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from attnkit.cli import app
from attnkit.data.speech.synth import draw_voices, synthesize

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")


def test_train_then_transcribe(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNKIT_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "words"
    lines = []
    for i, voice in enumerate(draw_voices("train", 4, 0)):
        for word in ("yes", "no", "stop"):
            synthesize(word, voice, root / f"{i}_{word}.wav")
            lines.append(f"{i}_{word}.wav\t{word}\tspeaker{i}")
    (root / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, [
        "train", "speech", "--out", str(run), "--data", f"folder:{root}:valid=0.25,test=0.25",
        "--listener-dim", "16", "--speller-dim", "16", "--attention-dim", "8", "--n-mels", "10",
        "--batch-size", "4", "--max-steps", "3", "--beam", "2",
    ])
    assert result.exit_code == 0, result.output
    assert "test (3 utterances, held-out voices, beam 2): WER" in result.output
    scores = json.loads((run / "test_scores.json").read_text())
    assert {"wer", "cer", "exact"} <= set(scores)

    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    out = tmp_path / "pictures"
    result = runner.invoke(app, [
        "transcribe", str(run), str(root / "0_yes.wav"), str(bad), "--out", str(out),
        "--beam", "1",
    ])
    assert result.exit_code == 2  # one file failed; the other was still transcribed
    assert f"{root / '0_yes.wav'}\t" in result.output
    assert "bad.wav: not a readable PCM WAV" in result.output
    assert (out / "0_yes.alignment.png").read_bytes()[:4] == b"\x89PNG"
    # The output says what the model can recognise at all: its training words.
    assert "attnkit: this model knows 3 words" in result.output

    # The run keeps its vocabulary and its confidence floor: the 1st percentile of the
    # validation utterances' mean log-probability per character, recomputed here.
    import torch

    from attnkit.data.speech import load_features, load_speech
    from attnkit.tasks.speech import Transcriber

    transcriber = Transcriber.load(run)
    assert transcriber.vocabulary == ["no", "stop", "yes"]
    splits = load_speech(f"folder:{root}:valid=0.25,test=0.25", progress=False)
    valid = load_features(splits.valid, transcriber.features, progress=False)
    confidences = torch.tensor([c for _, c in transcriber.transcribe_scored(valid.features)])
    assert transcriber.confidence_floor == pytest.approx(
        float(torch.quantile(confidences, 0.01)), abs=1e-4)
    assert transcriber.unsure(transcriber.confidence_floor - 1e-3)
    assert not transcriber.unsure(transcriber.confidence_floor + 1e-3)


def test_help_and_bad_arguments() -> None:
    runner = CliRunner()
    assert "location-aware" in runner.invoke(app, ["train", "speech", "--help"]).output
    assert "alignment" in runner.invoke(app, ["transcribe", "--help"]).output
    result = runner.invoke(app, ["train", "speech", "--out", "/tmp/x", "--beam", "0"])
    assert result.exit_code == 2
