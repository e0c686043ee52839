"""`attnkit translate`: what it says about inputs the model cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnkit.cli import run

TINY = ["train", "translate", "--data", "num2words:de-en:max=99", "--hidden-dim", "8",
        "--embed-dim", "8", "--eval-every", "100000", "--max-steps", "2"]


def test_inputs_the_model_never_saw_get_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "Dreihundertvierundzwanzig" (capital D) came out as "nine hundred and twenty-four" and
    # "324" as "nine thousand and nine", with nothing saying the model could not read them
    out = tmp_path / "run"
    assert run([*TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    texts = ["vierundzwanzig", "Vierundzwanzig", "24", ""]
    assert run(["translate", str(out), *texts]) == 0
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == texts  # TSV unchanged
    assert captured.err.splitlines() == [
        "attnkit: note: 'Vierundzwanzig': 'V' never appeared in its training data "
        "(num2words:de-en:max=99), so the translation is a guess",
        "attnkit: note: '24': '2', '4' never appeared in its training data "
        "(num2words:de-en:max=99), so the translation is a guess",
        "attnkit: note: '': nothing to translate; the model's answer for an empty text is a guess",
    ]


def test_a_file_as_run_is_refused_as_not_a_run_folder_and_pointer_files_still_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `attnkit translate hello.txt "x"` said "hello.txt names hello, which does not exist":
    # a file given as RUN was read as a checkpoint pointer
    hello = tmp_path / "hello.txt"
    hello.write_text("hello\n")
    assert run(["translate", str(hello), "x"]) == 2
    assert capsys.readouterr().err == (
        f"attnkit: error: Invalid value for 'RUN': {hello} is a file; RUN must be a run folder "
        "(made by 'attnkit train translate --out DIR') (see 'attnkit translate --help')\n")
    out = tmp_path / "run"
    assert run([*TINY, "--out", str(out)]) == 0
    (out / "mine").write_text((out / "last").read_text())  # a pointer of one's own
    for pointer in (out / "last", out / "mine"):
        capsys.readouterr()
        assert run(["translate", str(pointer), "vierundzwanzig"]) == 0
        assert capsys.readouterr().out.startswith("vierundzwanzig\t")
