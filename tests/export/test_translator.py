"""A trained Transformer translator through torch.export and ONNX: ``attnkit export`` writes
the graphs and a manifest; onnxruntime translates exactly as the PyTorch model does (greedy and
beam search); bad input is refused in one line and never leaves a half-written folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attnkit import cli
from attnkit.cli import app
from attnkit.data.translation import load_pairs
from attnkit.export import Graph, translator_graphs
from attnkit.export.onnx_translator import (
    ExportedTransformer,
    export_translator,
    load_onnx_translator,
)
from attnkit.models import Seq2SeqTransformer, TransformerConfig, greedy
from attnkit.tasks.translate import TranslateSettings, Translator, train_translator
from attnkit.training import TrainConfig

DATA = "num2words:de-en:max=199,valid=0.1,test=0.1"


def tiny(model: str, **kw) -> TranslateSettings:
    return TranslateSettings(
        data=DATA, model=model, embed_dim=16, hidden_dim=32, heads=2, layers=2, batch_size=16,
        dropout=0.0, eval_examples=8, **kw,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("translator") / "run"
    train_translator(
        tiny("transformer"), TrainConfig(lr=3e-3, max_steps=120, eval_every=120), folder
    )
    return folder


@pytest.fixture(scope="module")
def exported(run: Path) -> Path:
    out = run.parent / "onnx"
    out.mkdir()  # an empty folder is fine
    result = CliRunner().invoke(app, ["export", str(run), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def sources() -> list[str]:
    return [source for source, _ in load_pairs(DATA).valid]


def test_the_folder_and_its_manifest(exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == [
        "decoder_step.onnx", "encoder.onnx", "manifest.json", "source_tokenizer.json",
        "target_tokenizer.json",
    ]
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["format"] == "attnkit.onnx-translator" and manifest["opset"] >= 18
    assert manifest["attnkit_version"] and manifest["max_abs_error"] < 1e-4
    assert manifest["special"] == {"pad": 0, "bos": 1, "eos": 2}
    encoder, step = manifest["graphs"]["encoder"], manifest["graphs"]["decoder_step"]
    assert encoder["inputs"] == [
        {"name": "src", "dtype": "int64", "shape": ["batch", "source_length"]},
        {"name": "src_lengths", "dtype": "int64", "shape": ["batch"]},
    ]
    io = {e["name"]: e for e in step["inputs"] + step["outputs"]}
    assert [e["name"] for e in step["inputs"]] == [
        "tokens", "src_lengths",
        "past_self_keys.0", "past_self_values.0", "cross_keys.0", "cross_values.0",
        "past_self_keys.1", "past_self_values.1", "cross_keys.1", "cross_values.1",
    ]
    assert io["past_self_keys.1"]["shape"] == ["batch", 2, "past_length", 16]
    assert io["present_self_values.0"]["shape"] == ["batch", 2, "past_length + 1", 16]
    assert io["cross_keys.0"] == {
        "name": "cross_keys.0", "dtype": "float32", "shape": ["batch", 2, "source_length", 16]
    }
    assert io["logits"]["dtype"] == "float32" and io["logits"]["shape"][0] == "batch"
    names = {e["name"] for e in encoder["outputs"]}
    assert {"logits", "present_self_keys.1", "cross_values.1"} <= names
    for side in ("source", "target"):
        assert (exported / manifest["tokenizers"][side]["file"]).is_file()


@pytest.mark.parametrize("beam", [1, 3])
def test_onnxruntime_translates_as_pytorch(run, exported, sources, beam: int) -> None:
    ours, theirs = Translator.load(run), load_onnx_translator(exported)
    texts = sources[:40]
    want = ours.translate(texts, beam=beam)
    assert len(set(want)) > 5  # the model says different things: the comparison means something
    assert theirs.translate(texts, beam=beam) == want  # one batch of 40 mixed lengths
    assert theirs.translate(texts[:1], beam=beam) == want[:1]  # batch 1


def test_cli_translate_runtime_onnx(run, exported) -> None:
    runner = CliRunner()
    texts = ["siebzehn", "hundertdreiundzwanzig", "zwei"]
    onnx = runner.invoke(app, ["translate", str(exported), *texts, "--runtime", "onnx"])
    torch_ = runner.invoke(app, ["translate", str(run), *texts, "--beam", "1"])
    assert onnx.exit_code == 0 and torch_.exit_code == 0, onnx.output
    assert onnx.output == torch_.output and onnx.output.count("\t") == 3


class ProgramRunner:
    """An exported program as a function of named tensors, like an ONNX graph."""

    def __init__(self, graph) -> None:
        self.program = graph.export().module()
        self.input_names, self.output_names = graph.input_names, graph.output_names

    def __call__(self, inputs):
        outputs = self.program(*(inputs[name] for name in self.input_names))
        return dict(zip(self.output_names, outputs, strict=True))


def test_torch_export_programs_decode_as_the_model(run) -> None:
    model = Translator.load(run).model
    graphs = translator_graphs(model)
    encoder, step = ProgramRunner(graphs["encoder"]), ProgramRunner(graphs["decoder_step"])
    exported = ExportedTransformer(encoder, step, step.input_names, model.special)
    src = torch.randint(4, model.config.src_vocab, (5, 11))  # batch and length unlike the example
    lengths = torch.tensor([11, 1, 6, 9, 2])
    src = src.masked_fill(torch.arange(11) >= lengths.unsqueeze(1), 0)
    want = greedy(model, src, lengths, max_len=12)  # attnkit's KVCache in PyTorch
    got = greedy(exported, src, lengths, max_len=12)
    assert got.tokens == want.tokens
    torch.testing.assert_close(torch.tensor(got.scores), torch.tensor(want.scores))


def attnkit(args: list[str], capsys) -> tuple[int, str]:
    """The command's status and its one line on stderr (as a shell sees them)."""
    capsys.readouterr()
    status = cli.run([str(a) for a in args])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) <= 1 and "Traceback" not in err, err
    return status, err


def test_bad_input_is_one_line_with_status_2(run, exported, tmp_path, capsys) -> None:
    status, err = attnkit(["export", tmp_path / "nope", "--out", tmp_path / "o"], capsys)
    assert status == 2 and "no checkpoint" in err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    status, err = attnkit(["export", run, "--out", taken], capsys)
    assert status == 2 and "exists and is not an empty folder" in err
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    status, err = attnkit(["translate", run, "zwei", "--runtime", "onnx"], capsys)
    assert status == 2 and "attnkit export" in err
    status, err = attnkit(["export", run, "--out", tmp_path / "o", "--format", "tf"], capsys)
    assert status == 2 and not (tmp_path / "o").exists()
    for text, problem in (("{", "not valid JSON"), ('{"format": "x"}', "not an attnkit ONNX")):
        (taken / "manifest.json").write_text(text)
        status, err = attnkit(["translate", taken, "zwei", "--runtime", "onnx"], capsys)
        assert status == 2 and problem in err, err


def test_an_rnn_translator_is_refused(tmp_path, capsys) -> None:
    rnn = tmp_path / "rnn"
    train_translator(tiny("rnnsearch"), TrainConfig(max_steps=1), rnn)
    status, err = attnkit(["export", rnn, "--out", tmp_path / "o"], capsys)
    assert status == 2 and "'rnnsearch' translator does not export" in err
    assert not (tmp_path / "o").exists()


def test_a_missing_extra_says_what_to_install(run, exported, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    for args in (
        ["export", run, "--out", tmp_path / "o"],
        ["translate", exported, "zwei", "--runtime", "onnx"],
    ):
        status, err = attnkit(args, capsys)
        assert status == 2 and "onnxruntime: pip install 'attnkit[export]'" in err, err
    assert not (tmp_path / "o").exists()


def test_a_failed_export_leaves_nothing(run, tmp_path, monkeypatch) -> None:
    import attnkit.export.onnx_translator as onnx_translator

    def half_then_fail(graph, program, path: Path) -> Path:
        path.write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(onnx_translator, "save_onnx", half_then_fail)
    monkeypatch.setattr(Graph, "export", lambda self: None)  # no need to trace for this
    with pytest.raises(RuntimeError, match="disk full"):
        export_translator(run, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "options",
    [{"positions": "rope", "kv_heads": 1}, {"positions": "learned", "norm_first": False}],
    ids=["rope-multi-query", "learned-post-norm"],
)
def test_other_transformers_export_and_decode_as_themselves(options) -> None:
    torch.manual_seed(0)
    config = TransformerConfig(
        30, 31, width=16, heads=2, ff_dim=32, encoder_layers=1, decoder_layers=1, dropout=0.0,
        max_len=40, **options,
    )
    model = Seq2SeqTransformer(config).eval()
    graphs = translator_graphs(model)
    encoder, step = ProgramRunner(graphs["encoder"]), ProgramRunner(graphs["decoder_step"])
    exported = ExportedTransformer(encoder, step, step.input_names, model.special)
    src, lengths = torch.randint(4, 30, (3, 9)), torch.tensor([9, 2, 5])
    want, got = greedy(model, src, lengths, max_len=10), greedy(exported, src, lengths, max_len=10)
    assert got.tokens == want.tokens


def test_the_docs_snippets_run(run, exported, capsys) -> None:
    """docs/export.md: plain onnxruntime translates as attnkit does; the Graph example runs."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "export.md"
    plain, graph = re.findall(r"```python\n(.*?)```", docs.read_text(), flags=re.S)
    capsys.readouterr()
    exec(plain.replace('"runs/de-en-onnx"', repr(str(exported))), {})
    printed = capsys.readouterr().out.strip()
    assert printed == Translator.load(run).translate(["dreihundertvierundzwanzig"])[0]
    exec(graph, {})
