"""The eviction experiment end to end on tiny trained runs: the full cache scores exactly what
the teacher-forced forward pass scores, every (budget, policy) gets a row, the files are
written, and the CLI prints the table."""

from __future__ import annotations

import json
import math

import torch
from typer.testing import CliRunner

from attnkit.cli import app
from attnkit.tasks import eviction_experiment
from attnkit.tasks.music import MusicSettings, MusicTask
from attnkit.tasks.text_lm import TextSettings, train_text
from attnkit.training import TrainConfig, Trainer
from tests.data.music._tiny import tiny_chorales
from tests.tasks.test_text_lm import TINY


def _runs(tmp_path, monkeypatch):
    from attnkit.data.music import MusicData

    data = MusicData.build(tiny_chorales(), voices="satb", valid=0.15, test=0.15)
    monkeypatch.setattr(MusicSettings, "data", lambda self: data)
    settings = MusicSettings(width=32, heads=2, layers=1, ff_dim=64, window=32, batch_size=8,
                             dropout=0.0)
    torch.manual_seed(0)
    model = settings.build_model(data.vocab.size)
    Trainer(model, MusicTask(data, settings), TrainConfig(max_steps=5), run_dir=tmp_path / "m").fit()
    train_text(TextSettings(**TINY), TrainConfig(max_steps=5), tmp_path / "t")
    return tmp_path / "m", tmp_path / "t"


def test_the_experiment_scores_every_policy_and_budget(tmp_path, monkeypatch) -> None:
    music, text = _runs(tmp_path, monkeypatch)
    model, sequences = eviction_experiment.text_sequences(text, 3)
    with torch.no_grad():
        logits = model(sequences.inputs)  # (N, L, V)
    forward = torch.nn.functional.cross_entropy(logits.flatten(0, 1), sequences.targets.flatten())
    full = eviction_experiment.cached_nll(model, sequences, None, batch_size=2)
    assert math.isclose(full, float(forward), rel_tol=1e-5)

    result = CliRunner().invoke(app, [
        "experiment", "eviction", "--out", str(tmp_path / "out"), "--music", str(music),
        "--text", str(text), "--sequences", "3", "--sinks", "1",
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "out" / "eviction.json").read_text())
    for name in ("music", "text"):
        rows = saved[name]["rows"]
        assert [(r["budget"], r["policy"]) for r in rows] == [(None, "full")] + [
            (b, p) for b in (0.1, 0.2, 0.5) for p in ("window", "sinks", "h2o")
        ]
        assert all(r["slots"] <= saved[name]["length"] for r in rows)
    assert math.isclose(saved["text"]["rows"][0]["nll"], full, rel_tol=1e-6)
    assert (tmp_path / "out" / "eviction.png").stat().st_size > 10_000
    assert "h2o" in result.output and "wrote" in result.output
