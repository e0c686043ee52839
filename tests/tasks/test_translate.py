"""Translation end to end on tiny data: it learns, checkpoints round-trip, resume continues."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from attnkit.cli import app
from attnkit.data.translation import load_pairs
from attnkit.tasks.metrics import translation_scores
from attnkit.tasks.translate import TranslateSettings, Translator, prepare, train_translator
from attnkit.training import TrainConfig, load_checkpoint

DATA = "num2words:de-en:max=199,valid=0.1,test=0.1"


def settings(model: str = "rnnsearch", **kw) -> TranslateSettings:
    return TranslateSettings(
        data=DATA,
        model=model,
        embed_dim=16,
        hidden_dim=32,
        heads=2,
        batch_size=16,
        dropout=0.0,
        **kw,
    )


def test_tiny_rnnsearch_learns_and_beats_the_copy_baseline(tmp_path) -> None:
    s = settings()
    splits = load_pairs(s.data)
    copy = translation_scores([src for src, _ in splits.valid], [t for _, t in splits.valid])
    task, model = prepare(s)
    before = task.evaluate(model.eval())
    result, translator = train_translator(
        s, TrainConfig(lr=1e-2, max_steps=150, eval_every=150, log_every=50), tmp_path / "run"
    )
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.8 * losses[0]  # running means over 50 steps, label smoothing 0.1
    after = translator.evaluate(splits.valid)
    assert after["chrf"] > before["chrf"] + 20 and after["chrf"] > copy["chrf"] + 20, (
        before,
        after,
    )


@pytest.mark.parametrize("model", ["rnnenc", "transformer"])
def test_other_models_train_and_reload(tmp_path, model: str) -> None:
    s = settings(model)
    result, translator = train_translator(
        s, TrainConfig(lr=3e-3, max_steps=20, log_every=10), tmp_path / "run"
    )
    assert result.steps == 20
    assert isinstance(translator.translate(["siebzehn"])[0], str)


def test_checkpoint_round_trips_bit_exactly_and_resume_continues(tmp_path) -> None:
    s = settings()
    run = tmp_path / "run"
    schedule = {"lr": 3e-3, "decay_steps": 20, "log_every": 5}  # one schedule for all three runs
    first, _ = train_translator(s, TrainConfig(max_steps=10, **schedule), run)
    reloaded = Translator.load(run / "last")
    checkpoint = load_checkpoint(run / "last")
    for name, tensor in reloaded.model.state_dict().items():
        assert torch.equal(tensor, checkpoint.state_dict()[name]), name
    second, _ = train_translator(s, TrainConfig(max_steps=20, **schedule), run, resume=True)
    assert first.steps == 10 and second.steps == 20 and second.resumed_from is not None
    train_translator(s, TrainConfig(max_steps=20, **schedule), tmp_path / "straight")
    a = Translator.load(run / "last").model.state_dict()
    b = Translator.load(tmp_path / "straight" / "last").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_alignment_has_a_row_per_target_token(tmp_path) -> None:
    s = settings()
    _, translator = train_translator(s, TrainConfig(lr=3e-3, max_steps=5), tmp_path / "run")
    alignment = translator.align("vierundzwanzig", "twenty-four")
    assert alignment.weights.shape == (len(alignment.target_tokens), len(alignment.source_tokens))
    torch.testing.assert_close(alignment.weights.sum(-1), torch.ones(len(alignment.target_tokens)))


def test_cli_train_translate_evaluate(tmp_path) -> None:
    runner = CliRunner()
    run = tmp_path / "cli-run"
    result = runner.invoke(
        app,
        [
            "train",
            "translate",
            "--data",
            DATA,
            "--out",
            str(run),
            "--max-steps",
            "5",
            "--hidden-dim",
            "16",
            "--embed-dim",
            "8",
            "--batch-size",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "test: exact" in result.output
    assert set(json.loads((run / "test_scores.json").read_text())) == {"bleu", "chrf", "exact"}
    result = runner.invoke(app, ["translate", str(run), "siebzehn", "zwei", "--beam", "2"])
    assert result.exit_code == 0 and result.output.count("\t") == 2
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0 and "BLEU" in result.output


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="model must be one of"):
        TranslateSettings(model="gpt")
    with pytest.raises(ValueError, match="attention must be one of"):
        TranslateSettings(attention="bahdanau2")


def test_explain_a_translation_run(tmp_path) -> None:
    run = tmp_path / "run"
    train_translator(settings(), TrainConfig(lr=3e-3, max_steps=5), run)
    result = CliRunner().invoke(
        app, ["explain", str(run), "vierundzwanzig", "--out", str(tmp_path / "explain")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "explain" / "alignment.png").exists()
    assert (tmp_path / "explain" / "attention.html").exists()


def test_length_experiment_matches_parameters_and_scores_buckets(tmp_path) -> None:
    from attnkit.tasks import length_experiment

    summary = length_experiment.run(DATA, tmp_path, minutes=0.03, hidden_dim=16, buckets=3)
    search, enc = summary["parameters"]["RNNsearch"], summary["parameters"]["RNNenc"]
    assert abs(search - enc) / search <= 0.10
    assert len(summary["buckets"]) >= 2
    assert all(set(b["scores"]) == {"RNNsearch", "RNNenc"} for b in summary["buckets"])
    assert sum(b["pairs"] for b in summary["buckets"]) == len(load_pairs(DATA).test)
    assert (tmp_path / "length.png").read_bytes()[:4] == b"\x89PNG"
