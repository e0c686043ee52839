"""Questions over documents with MiniLM: two levels of attention, the cached index, the page."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from attnkit.cli import app, run
from attnkit.data.documents import DocEntry, Document
from attnkit.models import load_bert
from attnkit.tasks import ask

DOCS = {
    "alps.txt": "The Alps are a high mountain range in Europe. Their peaks are covered in snow. "
    "Climbers reach the summit of Mont Blanc in summer.",
    "nile.md": "# The Nile\n\nThe Nile is a long river in Africa. It flows north into the "
    "Mediterranean Sea. Farmers use its water for crops.",
    "bread.txt": "Bread is baked from flour, water and yeast. The dough rises before baking. "
    "An oven at high heat gives a good crust.",
    "linalg.txt": "Matrix inversion computes the inverse of a square matrix. A singular matrix "
    "has no inverse. Use a solver rather than the inverse for linear systems.",
}


@pytest.fixture(scope="module")
def encoder():
    return load_bert()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def folder(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    return docs


def _asker(folder, encoder, **kw):
    return ask.Asker.from_folder(folder, encoder=encoder, encoder_name="minilm-test", **kw)[0]


def test_two_levels_of_attention_are_softmax_of_scaled_cosines(folder, encoder) -> None:
    asker = _asker(folder, encoder, max_words=12)
    question = "Which text talks about mountains and snow?"
    answer = asker.ask(question, top=2)
    assert answer.hits[0].passage.document == "alps.txt"
    # first level, written out: softmax_j(τ · cos(q, k_j)) over every passage
    q = encoder.encode([question])[0]
    keys = encoder.encode([p.text for p in asker.index.passages])
    expected = torch.softmax(ask.TEMPERATURE * F.cosine_similarity(q[None], keys), dim=0)
    got = asker.passage_weights([question])[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert [h.weight for h in answer.hits] == pytest.approx(
        expected.topk(2).values.tolist(), rel=1e-4
    )
    # second level: inside each shown passage, softmax over its own sentences
    for hit in answer.hits:
        s = encoder.encode(list(hit.passage.sentences))
        inner = torch.softmax(ask.SENTENCE_TEMPERATURE * F.cosine_similarity(q[None], s), dim=0)
        assert hit.sentence_weights == pytest.approx(inner.tolist(), rel=1e-4, abs=1e-6)
    assert "snow" in answer.hits[0].best_sentence or "mountain" in answer.hits[0].best_sentence


def test_sentence_attention_masks_the_padding() -> None:
    torch.manual_seed(0)
    q, a, b = torch.randn(4), torch.randn(3, 4), torch.randn(1, 4)
    wa, wb = ask.sentence_attention(q, [a, b], temperature=2.0)
    torch.testing.assert_close(wa, torch.softmax(2.0 * F.cosine_similarity(q[None], a), 0))
    assert wb.tolist() == pytest.approx([1.0])
    with pytest.raises(ValueError, match="non-empty"):
        ask.sentence_attention(q, [], 1.0)
    with pytest.raises(ValueError, match="temperature"):
        ask.passage_attention(q[None], a, 0.0)


def test_editing_a_document_rebuilds_the_index(folder, encoder) -> None:
    first = _asker(folder, encoder)
    assert sorted(first.index.encoded) == sorted(DOCS)
    assert _asker(folder, encoder).index.encoded == []  # cached
    (folder / "bread.txt").write_text(
        "Volcanoes are mountains that erupt lava and ash.", encoding="utf-8"
    )
    rebuilt = _asker(folder, encoder)
    assert rebuilt.index.encoded == ["bread.txt"]
    top = rebuilt.ask("Which mountains erupt lava?", top=1).hits[0]
    assert top.passage.document == "bread.txt" and "lava" in top.passage.text


def test_the_html_page_escapes_document_text(tmp_path, encoder) -> None:
    docs = [
        Document.from_text("evil<b>.txt", "Attack with <script>alert('x')</script> & friends."),
        Document.from_text("plain.txt", "Nothing to see here at all."),
    ]
    asker = ask.Asker.from_documents(docs, collection=None, encoder=encoder, encoder_name="t")
    answer = asker.ask("<script> attack", top=2)
    page = ask.write_html(answer, tmp_path / "answer.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "evil&lt;b&gt;.txt" in page and "&amp; friends" in page
    assert page.count("<section>") == 2 and "rgba(255, 190, 0, 0.850)" in page
    text = ask.render_text(answer)
    assert "evil<b>.txt" in text and "»" in text
    with pytest.raises(ValueError, match=r"\.html"):
        ask.write_html(answer, tmp_path / "answer.txt")


def test_retrieval_metric_beside_bm25(encoder) -> None:
    entries = [
        DocEntry("m.inv", "Compute the inverse of a matrix.", DOCS["linalg.txt"]),
        DocEntry("geo.alps", "Describe a European mountain range.", DOCS["alps.txt"]),
        DocEntry("geo.nile", "Describe an African river.", DOCS["nile.md"]),
        DocEntry("food.bread", "Explain how to bake a loaf.", DOCS["bread.txt"]),
    ]
    docs = [Document.from_text(e.name, e.body) for e in entries]
    asker = ask.Asker.from_documents(docs, collection=None, encoder=encoder, encoder_name="t")
    scores = ask.evaluate_retrieval(entries, asker=asker, ks=(1, 4))
    assert scores["attention@1"] == 100.0 and scores["attention@4"] == 100.0
    assert scores["bm25@4"] == 100.0 and 0 <= scores["bm25@1"] <= 100
    assert scores["questions"] == 4 and scores["nll"] > 0


def test_ranks_count_ties_against_the_gold_document() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.5, 0.2], [0.0, 0.0, 0.0]])
    assert ask.ranks_of_gold(scores).tolist() == [0, 1, 2]
    assert ask.accuracy_at(torch.tensor([0, 1, 2]), 2) == pytest.approx(200 / 3)


def test_cli_ask_prints_weights_and_writes_the_page(folder, tmp_path) -> None:
    page = tmp_path / "page.html"
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    result = CliRunner().invoke(
        app, ["ask", "what computes a matrix inverse?", "--docs", str(folder), "--html", str(page)]
    )
    assert result.exit_code == 0, result.output
    assert "1. linalg.txt · passage 1" in result.output
    assert "skipped latin1.txt: not UTF-8" in result.output
    assert page.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_cli_ask_on_an_empty_folder_exits_2_naming_it(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    status = run(["ask", "anything?", "--docs", str(empty)])  # what the attnkit script runs
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "holds no readable" in err and str(empty) in err


def test_a_question_no_document_answers_is_flagged(folder, encoder, tmp_path) -> None:
    (folder / "kitchen.txt").write_text(
        "Put the kettle on the stove. Wash the dishes after dinner. The kitchen table seats four.",
        encoding="utf-8",
    )
    asker = _asker(folder, encoder)
    real = asker.ask("what computes a matrix inverse?", top=2)
    off = asker.ask("Capital of France?", top=2)
    q = encoder.encode(["Capital of France?"])[0]
    keys = encoder.encode([p.text for p in asker.index.passages])
    assert off.best_cosine == pytest.approx(float(F.cosine_similarity(q[None], keys).max()),
                                            abs=1e-4)
    assert real.answered and real.best_cosine > 0.5
    assert not off.answered and off.hits[0].weight > 0.3  # softmax still picks something
    assert "no document seems to answer this" in ask.render_text(off)
    assert "no document seems to answer" not in ask.render_text(real)
    page = ask.write_html(off, tmp_path / "off.html").read_text(encoding="utf-8")
    assert '<p class="warn">no document seems to answer this' in page


def test_highlights_show_the_weight_that_reached_each_sentence(folder, encoder) -> None:
    asker = _asker(folder, encoder, max_words=12)
    answer = asker.ask("what computes a matrix inverse?", top=3)
    page = ask.render_html(answer)
    opacities = [float(x) for x in re.findall(r"rgba\(255, 190, 0, ([0-9.]+)\)", page)]
    reached = [h.weight * w for h in answer.hits for w in h.sentence_weights]
    assert len(opacities) == len(reached)
    # each sentence's colour is its passage weight x its weight within the passage, on one
    # scale for the page: a sentence of a passage the question barely looked at stays pale
    assert opacities == pytest.approx([0.85 * r / max(reached) for r in reached], abs=1e-3)
    assert answer.hits[-1].weight < 0.05 and max(opacities[-len(answer.hits[-1].sentence_weights):]) < 0.1
