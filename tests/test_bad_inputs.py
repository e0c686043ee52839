"""Every user-data loader, given broken files through the command line (issue 9).

For each loader that reads a user's files (translation ``tsv:``, captioning ``folder:``,
speech ``folder:``) and each fault (missing file, empty file, bad encoding, malformed line,
corrupt image or audio), ``attnkit train ...`` must exit with status 2 and one line
``attnkit: error: ...`` naming the file (and the line where there is one), print no traceback,
and leave no checkpoint behind in ``--out``. Faults a loader survives by design (one corrupt
image among good ones is skipped with a warning) are checked in the loaders' own tests; here
every file is broken so nothing usable remains.
"""

from __future__ import annotations

import re
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnkit.cli import run

TINY = ["--max-steps", "1", "--eval-every", "1", "--batch-size", "2"]


def _wav(path: Path, seconds: float = 0.3, rate: int = 16000) -> None:
    samples = (np.sin(np.arange(int(seconds * rate)) * 0.05) * 8000).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


# --- translation: tsv:PATH ----------------------------------------------------------------
def _tsv(tmp: Path, fault: str) -> tuple[list[str], str]:
    path = tmp / "pairs.tsv"
    good = "".join(f"ein satz {i}\ta sentence {i}\n" for i in range(20))
    if fault == "missing":
        return ["--data", f"tsv:{path}"], r"pairs\.tsv"
    if fault == "empty":
        path.write_text("")
        return ["--data", f"tsv:{path}"], r"pairs\.tsv"
    if fault == "encoding":
        path.write_bytes(good.encode() + "caf\xe9\tcoffee\n".encode("latin-1"))
        return ["--data", f"tsv:{path}"], r"pairs\.tsv:21"
    if fault == "malformed":
        path.write_text(good + "no tab on this line\n")
        return ["--data", f"tsv:{path}"], r"pairs\.tsv:21"
    raise AssertionError(fault)


# --- captioning: folder:DIR with captions.tsv -------------------------------------------------
def _images(tmp: Path, fault: str) -> tuple[list[str], str]:
    root = tmp / "images"
    root.mkdir()
    names = [f"img{i}.png" for i in range(6)]
    good = "".join(f"{name}\tcaption {i}\n" for i, name in enumerate(names))
    if fault == "missing":
        return ["--data", f"folder:{root}"], r"captions\.tsv"
    if fault == "empty":
        (root / "captions.tsv").write_text("")
        return ["--data", f"folder:{root}"], r"captions\.tsv"
    for name in names:
        Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(root / name)
    if fault == "encoding":
        (root / "captions.tsv").write_bytes(good.encode() + b"img0.png\tcaf\xe9\n")
        return ["--data", f"folder:{root}"], r"captions\.tsv:7"
    if fault == "malformed":
        (root / "captions.tsv").write_text(good + "img0.png without a tab\n")
        return ["--data", f"folder:{root}"], r"captions\.tsv:7"
    if fault == "corrupt":
        for name in names:
            (root / name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        (root / "captions.tsv").write_text(good)
        return ["--data", f"folder:{root}"], r"img\d\.png"
    raise AssertionError(fault)


# --- speech: folder:DIR with transcripts.tsv ---------------------------------------------------
def _speech(tmp: Path, fault: str) -> tuple[list[str], str]:
    root = tmp / "speech"
    root.mkdir()
    names = [f"u{i}.wav" for i in range(6)]
    good = "".join(f"{name}\tword {i}\tspk{i % 3}\n" for i, name in enumerate(names))
    if fault == "missing":
        return ["--data", f"folder:{root}"], r"transcripts\.tsv"
    if fault == "empty":
        (root / "transcripts.tsv").write_text("")
        return ["--data", f"folder:{root}"], r"transcripts\.tsv"
    for name in names:
        _wav(root / name)
    if fault == "encoding":
        (root / "transcripts.tsv").write_bytes(good.encode() + b"u0.wav\tcaf\xe9\tspk0\n")
        return ["--data", f"folder:{root}"], r"transcripts\.tsv:7"
    if fault == "malformed":
        (root / "transcripts.tsv").write_text(good.replace("\t", " "))
        return ["--data", f"folder:{root}"], r"transcripts\.tsv"
    if fault == "corrupt":
        for name in names:
            (root / name).write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
        (root / "transcripts.tsv").write_text(good)
        return ["--data", f"folder:{root}"], r"u\d\.wav"
    raise AssertionError(fault)


LOADERS: dict[str, tuple[list[str], Callable[[Path, str], tuple[list[str], str]], list[str]]] = {
    "translate": (["train", "translate", "--hidden-dim", "8", "--embed-dim", "8"], _tsv,
                  ["missing", "empty", "encoding", "malformed"]),
    "caption": (["train", "caption", "--hidden-dim", "8"], _images,
                ["missing", "empty", "encoding", "malformed", "corrupt"]),
    "speech": (["train", "speech", "--listener-dim", "4", "--speller-dim", "4"], _speech,
               ["missing", "empty", "encoding", "malformed", "corrupt"]),
}
CASES = [(task, fault) for task, (_, _, faults) in LOADERS.items() for fault in faults]


@pytest.mark.parametrize(("task", "fault"), CASES, ids=[f"{t}-{f}" for t, f in CASES])
def test_bad_files_exit_2_with_the_file_named_and_nothing_written(
    task: str, fault: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command, make, _ = LOADERS[task]
    data_args, names = make(tmp_path, fault)
    out = tmp_path / "run"
    status = run([*command, *data_args, *TINY, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert len(err) == 1 and err[0].startswith("attnkit: error: "), err
    assert "Traceback" not in err[0]
    assert re.search(names, err[0]), (names, err[0])
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not leftovers, leftovers
