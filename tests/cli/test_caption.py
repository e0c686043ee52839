"""``attnkit train caption`` and ``attnkit caption``: train, caption files and folders, draw
the attention, name unreadable files without losing the others."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from attnkit.cli import app
from attnkit.data.images import load_caption_data

DATA = "digits:min=2,max=3,augment=0,train=64,valid=8,test=8"
runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = runner.invoke(app, [
        "train", "caption", "--data", DATA, "--out", str(out), "--max-steps", "3",
        "--channels", "8", "--hidden-dim", "16", "--attention-dim", "8", "--batch-size", "16",
    ])
    assert result.exit_code == 0, result.output
    assert "test (8 images): exact" in result.output
    return out


def _strip_png(path, index: int = 0):
    strip = load_caption_data(DATA).test[index]
    Image.fromarray((strip.image * 255).round().astype(np.uint8)).save(path)
    return strip


def test_train_caption_writes_the_run_and_its_test_scores(run) -> None:
    scores = json.loads((run / "test_scores.json").read_text())
    assert set(scores) == {"bleu", "chrf", "exact", "wer", "attention_accuracy"}
    assert (run / "best").exists() and (run / "last").exists()


def test_caption_prints_each_file_and_draws_its_attention(run, tmp_path) -> None:
    _strip_png(tmp_path / "a.png", 0)
    _strip_png(tmp_path / "b.png", 1)
    pictures = tmp_path / "pictures"
    result = runner.invoke(app, ["caption", str(run), str(tmp_path / "a.png"),
                                 str(tmp_path / "b.png"), "--out", str(pictures)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "\t" in line]
    assert [line.split("\t")[0] for line in lines] == [str(tmp_path / "a.png"),
                                                       str(tmp_path / "b.png")]
    for name in ("a", "b"):
        assert (pictures / f"{name}.attention.png").read_bytes()[:4] == b"\x89PNG"


def test_an_unreadable_file_is_named_and_the_others_still_captioned(run, tmp_path) -> None:
    _strip_png(tmp_path / "good.png")
    (tmp_path / "bad.png").write_text("this is not an image")
    result = runner.invoke(app, ["caption", str(run), str(tmp_path / "bad.png"),
                                 str(tmp_path / "good.png"), "--no-plot"])
    assert result.exit_code == 2
    assert f"{tmp_path / 'good.png'}\t" in result.stdout
    assert "bad.png" in result.stderr and "error" in result.stderr
    assert not list(tmp_path.glob("*.attention.png"))


def test_a_folder_with_captions_tsv_is_captioned_and_scored(run, tmp_path) -> None:
    first = _strip_png(tmp_path / "first.png", 0)
    second = _strip_png(tmp_path / "second.png", 1)
    (tmp_path / "captions.tsv").write_text(
        f"first.png\t{first.caption}\nsecond.png\t{second.caption}\n"
    )
    result = runner.invoke(app, ["caption", str(run), str(tmp_path), "--no-plot"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\t") == 2
    assert "(2 captioned images): exact" in result.stdout


def test_bad_arguments_exit_2_with_one_line(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "attnkit", "train", "caption", "--out", str(tmp_path / "r"),
         "--attention", "glance", "--max-steps", "1"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "attnkit: error: attention must be one of ['soft', 'hard'], got 'glance'"
    ]
