"""The attnkit command: version, help on every subcommand, the demo, and bad arguments."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from attnkit import __version__
from attnkit.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def subcommands() -> list[list[str]]:
    import typer.main

    found: list[list[str]] = []

    def walk(command, path: list[str]) -> None:
        found.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


@pytest.mark.parametrize("path", subcommands(), ids=lambda path: " ".join(path) or "attnkit")
def test_every_command_has_help_with_h_too(path: list[str]) -> None:
    for flag in ("--help", "-h"):
        result = runner.invoke(app, [*path, flag])
        assert result.exit_code == 0 and "Usage" in result.output, result.output
    assert "<bool>" not in result.output  # flags take no value
    usage = result.output.split("\n\n")[0]
    assert re.findall(r"\{[^}]*[a-z][^}]*\}", usage) == []  # {RUN}, as every command writes it


def test_documents_demo_prints_weights_and_writes_the_heatmap(tmp_path) -> None:
    result = runner.invoke(app, ["demo", "documents", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "gzip" in result.output and "<- best" in result.output
    png = tmp_path / "demo_attention.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_documents_demo_shows_words_of_the_documents_not_stems() -> None:
    from attnkit.tasks import documents_demo

    result = documents_demo.run()
    text = " ".join(documents_demo.module_text(name).lower() for name in documents_demo.MODULES)
    shown = {word for row in result.top_terms for word in row}
    assert len(shown) > 10
    assert [w for w in shown if not re.search(rf"(?<![a-z]){w}(?![a-z])", text)] == []


def test_bad_arguments_exit_2_with_one_line_and_no_traceback() -> None:
    for args in (["no-such-command"], ["demo", "--no-such-option"]):
        proc = subprocess.run(
            [sys.executable, "-m", "attnkit", *args], capture_output=True, text=True
        )
        assert proc.returncode == 2, args
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("where", ["a-file", "a-file/sub"])
def test_an_out_that_cannot_be_a_folder_is_bad_input_not_a_bug(tmp_path, capsys, where) -> None:
    # --out naming a file ended in "attnkit: internal error: FileExistsError ..." (status 1,
    # the status of a bug), as did an unwritable --out (PermissionError)
    from attnkit.cli import run

    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / where
    assert run(["demo", "documents", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnkit: error: {out}: ") and err.count("\n") == 1, err
    assert "internal error" not in err and "Errno" not in err


def test_translation_demo_with_a_short_budget(tmp_path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--minutes", "0.1"])
    assert result.exit_code == 0, result.output
    assert "Held-out test numbers: exact match" in result.output
    assert "exact match by number length:" in result.output
    lengths = [line.split()[0] for line in result.output.splitlines()
               if re.match(r"\s+\d\s+(-|\d)", line)]
    assert lengths == ["1", "2", "3", "4"]  # every number length is scored
    assert "some held-out numbers" in result.output
    assert (tmp_path / "demo_alignment.png").read_bytes()[:4] == b"\x89PNG"


def test_explain_says_when_minilm_cuts_a_long_text(tmp_path) -> None:
    # 300 words are more than MiniLM's 256 tokens: the report and pictures covered only the
    # first 256 without saying so
    long = " ".join(["the cat sat on the mat"] * 50)
    result = runner.invoke(app, ["explain", long, "--summary", "key_totals", "--out",
                                 str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith(
        "note: MiniLM reads at most 256 tokens: only the first 256 of this text are explained")
    assert "256 first tokens of: the cat" in (tmp_path / "attention.html").read_text()
    short = runner.invoke(app, ["explain", "the cat sat on the mat", "--summary",
                                "key_totals", "--out", str(tmp_path)])
    assert short.exit_code == 0 and "note:" not in short.output


def test_explain_a_sentence_with_minilm(tmp_path) -> None:
    result = runner.invoke(
        app, ["explain", "The cat sat on the mat because it was tired.", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.strip().startswith("it ->"))
    assert "cat" in line
    for name in ("attention.html", "rollout.png", "last_layer_heads.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_explain_a_sentence_by_its_key_totals(tmp_path) -> None:
    sentence = "The cat sat on the mat because it was tired."
    result = runner.invoke(
        app, ["explain", sentence, "--summary", "key_totals", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    totals = [float(line.split()[-1]) for line in result.output.splitlines()
              if "-> in total" in line]  # one per token: what it received from all queries
    assert len(totals) >= 10 and abs(sum(totals) - len(totals)) <= 0.005 * len(totals)  # Σ_j Σ_i P_ij = Lq
    page = (tmp_path / "attention.html").read_text()
    assert '"totals"' in page and not (tmp_path / "rollout.png").exists()
    bad = runner.invoke(app, ["explain", sentence, "--summary", "topk"])
    assert bad.exit_code == 2 and "--summary must be one of" in bad.output


def test_explain_rejects_a_missing_run(tmp_path) -> None:
    result = runner.invoke(app, ["explain", str(tmp_path / "nope"), "zwei"])
    assert result.exit_code == 2


def test_caption_and_transcribe_name_their_shared_options_alike() -> None:
    import typer.main

    group = typer.main.get_command(app)
    options = {
        name: {o for p in group.commands[name].params for o in (*p.opts, *p.secondary_opts)}
        for name in ("caption", "transcribe")
    }
    shared = {"--out", "--plot", "--no-plot", "--beam"}
    assert shared <= options["caption"] and shared <= options["transcribe"]


def test_a_mistyped_demo_gets_the_hint_a_mistyped_command_gets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 'attnkit trian' says "Did you mean 'train'?" (click); 'attnkit demo translat' said only
    # "expected translate or documents, got 'translat'"
    from attnkit.cli import run

    assert run(["trian"]) == 2
    assert "Did you mean 'train'?" in capsys.readouterr().err
    assert run(["demo", "translat"]) == 2
    assert "got 'translat'. Did you mean 'translate'?" in capsys.readouterr().err
    assert run(["demo", "xyz"]) == 2
    assert "Did you mean" not in capsys.readouterr().err
