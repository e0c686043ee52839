"""Summarisation end to end on tiny data: the pointer-generator learns to copy unseen names and
beats the lead-sentence baseline; checkpoints reload; the commands work."""

from __future__ import annotations

import random

import pytest
import torch
from typer.testing import CliRunner

from attnkit.cli import app
from attnkit.data.documents import WordTokenizer
from attnkit.tasks.summarize import (
    Summarizer,
    SummarizeSettings,
    baseline_scores,
    encode_pair,
    lead_sentence,
    load_summary_pairs,
    prepare,
    rouge_scores,
    train_summarizer,
)
from attnkit.training import TrainConfig

NOUNS = ("sum", "mean", "maximum", "minimum", "product", "median")


def write_pairs(path, n: int = 240) -> str:
    """body<TAB>summary; the summary names a made-up identifier seen once in the data, so
    the vocabulary (min_frequency 3) never holds it: it must be copied."""
    rng = random.Random(0)
    lines = []
    for i in range(n):
        name = "".join(rng.choice("bcdfghklmnprstvz") for _ in range(5)) + str(i)
        noun = rng.choice(NOUNS)
        body = (
            f"This routine belongs to the toolkit. It returns the {noun} of {name} values "
            f"along an axis. Missing values are ignored."
        )
        lines.append(f"{body}\tReturn the {noun} of {name} values.")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"tsv:{path}:valid=0.1,test=0.1"


def settings(data: str, **kw) -> SummarizeSettings:
    base = dict(
        data=data,
        embed_dim=24,
        hidden_dim=48,
        min_frequency=3,
        batch_size=16,
        dropout=0.0,
        max_source=40,
        max_target=12,
        eval_examples=24,
    )
    return SummarizeSettings(**(base | kw))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("summarize")
    data = write_pairs(folder / "pairs.tsv")
    s = settings(data)
    task, model = prepare(s)
    before = task.evaluate(model.eval())
    result, summarizer = train_summarizer(
        s, TrainConfig(lr=1e-2, max_steps=40, eval_every=40, log_every=10), folder / "run"
    )
    return data, folder, before, result, summarizer


def test_it_learns_to_copy_and_beats_the_lead_sentence(trained) -> None:
    data, _, before, result, summarizer = trained
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0], losses
    test = load_summary_pairs(data).test
    scores = summarizer.evaluate(test)
    lead = baseline_scores(test)
    assert scores["rougeL"] > lead["rougeL"] + 20 and scores["rougeL"] > before["rougeL"] + 20
    assert scores["copied"] > 50  # most summaries hold the unseen name, copied from the body
    body, summary = test[0]
    name = summary.split()[4]
    assert summarizer.tokenizer.word_id(name) == WordTokenizer.unk_id
    assert name in summarizer.summarize([body])[0]


def test_the_checkpoint_reloads_and_the_commands_run(trained, tmp_path) -> None:
    data, folder, _, _, summarizer = trained
    reloaded = Summarizer.load(folder / "run")
    test = load_summary_pairs(data).test
    assert reloaded.summarize([b for b, _ in test[:4]]) == summarizer.summarize(
        [b for b, _ in test[:4]]
    )
    assert reloaded.summarize([test[0][0]], beam=3)[0]
    doc = tmp_path / "doc.txt"
    doc.write_text(test[0][0], encoding="utf-8")
    runner = CliRunner()
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    args = ["summarize", str(folder / "run"), str(latin1), str(tmp_path / "missing.txt"), str(doc)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"skipped {latin1}: not UTF-8" in result.output  # the rest is kept
    assert f"skipped {tmp_path / 'missing.txt'}: No such file" in result.output
    assert f"{doc}\t" in result.output and test[0][1].split()[4] in result.output
    result = runner.invoke(app, ["summarize", str(folder / "run"), "--evaluate"])
    assert result.exit_code == 0 and "lead sentence" in result.output, result.output


def test_train_command_reports_test_rouge(tmp_path) -> None:
    data = write_pairs(tmp_path / "pairs.tsv", n=60)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "summarize",
            "--out",
            str(out),
            "--data",
            data,
            "--no-copy",
            "--max-steps",
            "3",
            "--embed-dim",
            "8",
            "--hidden-dim",
            "8",
            "--batch-size",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "test ROUGE-1/2/L" in result.output and (out / "test_scores.json").is_file()
    assert Summarizer.load(out).model.pointer is None


def test_without_copying_an_unseen_target_word_is_unk(tmp_path) -> None:
    tok = WordTokenizer.train(["Return the sum of values ."], min_frequency=1)
    copy = encode_pair(
        tok, "the sum of zork values", "Return the sum of zork values .", settings("docstrings")
    )
    plain = encode_pair(
        tok,
        "the sum of zork values",
        "Return the sum of zork values .",
        settings("docstrings", copy=False),
    )
    v = tok.vocab_size
    assert copy.oovs == ["zork"] and copy.target[4] == v and copy.source[3] == v
    assert plain.target[4] == WordTokenizer.unk_id


def test_rouge_and_the_lead_sentence() -> None:
    assert lead_sentence("First one here. Second one.") == "First one here."
    scores = rouge_scores(["the cat sat"], ["the cat sat"])
    assert scores == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})
    assert rouge_scores(["a b"], ["c d"])["rouge1"] == 0.0
    with pytest.raises(ValueError, match="as many"):
        rouge_scores(["a"], [])
    with pytest.raises(ValueError, match="data"):
        SummarizeSettings(data="bible:en-es")


def test_init_from_continues_a_run_with_coverage_switched(trained) -> None:
    data, folder, _, _, summarizer = trained
    run = str(folder / "run")
    task, model = prepare(settings(data, coverage=False, init_from=run))
    assert task.tokenizer.to_json() == summarizer.tokenizer.to_json()
    base = summarizer.model.state_dict()
    assert all(torch.equal(t, base[k]) for k, t in model.state_dict().items())
    assert not model.config.coverage
    with pytest.raises(ValueError, match="hidden_dim"):
        prepare(settings(data, hidden_dim=16, init_from=run))
