"""The passage index: cached, and rebuilt exactly for the documents that changed."""

from __future__ import annotations

import pytest
import torch

from attnkit.data.documents import Document, build_index, encode_in_batches, read_folder


class CountingEncoder:
    """Letter counts, L2-normalised (a stand-in for MiniLM), remembering what it encoded."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.seen.extend(texts)
        rows = torch.zeros(len(texts), 26)
        for r, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    rows[r, ord(ch) - 97] += 1
        return torch.nn.functional.normalize(rows, dim=-1)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNKIT_CACHE_DIR", str(tmp_path / "cache"))


def _folder(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "mountains.txt").write_text("Mountains are tall. Snow lies on them.", encoding="utf-8")
    (docs / "rivers.md").write_text("# Rivers\n\nRivers flow to the sea.", encoding="utf-8")
    (docs / "deserts.txt").write_text("Deserts are dry.", encoding="utf-8")
    return docs


def _build(folder, encoder, encoder_id="fake-1"):
    docs = read_folder(folder).documents
    return build_index(docs, encoder, collection=str(folder), encoder_id=encoder_id, max_words=4)


def test_second_build_comes_from_the_cache(tmp_path) -> None:
    folder = _folder(tmp_path)
    first = _build(folder, CountingEncoder())
    assert sorted(first.encoded) == ["deserts.txt", "mountains.txt", "rivers.md"]
    assert first.cache_file is not None and first.cache_file.is_file()
    encoder = CountingEncoder()
    second = _build(folder, encoder)
    assert second.encoded == [] and encoder.seen == []
    assert second.passages == first.passages
    assert torch.equal(second.embeddings, first.embeddings)
    assert [p.document for p in second.passages] == [
        "deserts.txt",
        "mountains.txt",
        "mountains.txt",
        "rivers.md",
        "rivers.md",
    ]


def test_editing_a_file_rebuilds_its_passages_only(tmp_path) -> None:
    folder = _folder(tmp_path)
    _build(folder, CountingEncoder())
    (folder / "deserts.txt").write_text("Deserts are dry and hot.", encoding="utf-8")
    encoder = CountingEncoder()
    index = _build(folder, encoder)
    assert index.encoded == ["deserts.txt"] and encoder.seen == ["Deserts are dry and hot."]
    row = [p.document for p in index.passages].index("deserts.txt")
    assert index.passages[row].text == "Deserts are dry and hot."
    assert torch.allclose(index.embeddings[row], CountingEncoder()(["Deserts are dry and hot."])[0])
    # ... and the rebuilt index is what the next build reads back
    again = CountingEncoder()
    assert _build(folder, again).passages == index.passages and again.seen == []


def test_added_and_removed_files(tmp_path) -> None:
    folder = _folder(tmp_path)
    _build(folder, CountingEncoder())
    (folder / "rivers.md").unlink()
    (folder / "lakes.txt").write_text("Lakes are still.", encoding="utf-8")
    encoder = CountingEncoder()
    index = _build(folder, encoder)
    assert index.encoded == ["lakes.txt"]
    assert index.documents == ["deserts.txt", "lakes.txt", "mountains.txt"]
    assert len(index) == index.embeddings.shape[0] == 4


def test_another_encoder_or_a_corrupt_cache_rebuilds_everything(tmp_path) -> None:
    folder = _folder(tmp_path)
    first = _build(folder, CountingEncoder())
    assert len(_build(folder, CountingEncoder(), encoder_id="fake-2").encoded) == 3
    first.cache_file.write_bytes(b"not a safetensors file")
    assert len(_build(folder, CountingEncoder()).encoded) == 3


def test_bad_encoders_and_inputs_are_refused() -> None:
    docs = [Document.from_text("a", "Alpha."), Document.from_text("a", "Beta.")]
    with pytest.raises(ValueError, match="unique"):
        build_index(docs, CountingEncoder(), collection=None, encoder_id="x")
    with pytest.raises(ValueError, match="no documents"):
        build_index([], CountingEncoder(), collection=None, encoder_id="x")
    with pytest.raises(ValueError, match=r"expected \(2, E\)"):
        encode_in_batches(lambda texts: torch.zeros(1, 3), ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        encode_in_batches(lambda texts: torch.full((len(texts), 3), float("nan")), ["a"])


def test_batches_follow_length_but_rows_follow_the_input() -> None:
    texts = ["ccc ccc", "a", "bb"]
    encoder = CountingEncoder()
    rows = encode_in_batches(encoder, texts, batch_size=2)
    assert encoder.seen == ["a", "bb", "ccc ccc"]
    assert torch.allclose(rows, CountingEncoder()(texts))


def test_an_interrupted_build_keeps_what_it_encoded(tmp_path) -> None:
    folder = _folder(tmp_path)
    docs = read_folder(folder).documents  # deserts (1 passage), mountains (2), rivers (2)

    class Stop(Exception):
        pass

    class FailingEncoder(CountingEncoder):
        def __call__(self, texts: list[str]) -> torch.Tensor:
            if any("Rivers" in t for t in texts):
                raise Stop  # interrupted while encoding the last document
            return super().__call__(texts)

    def build(encoder):
        return build_index(
            docs, encoder, collection=str(folder), encoder_id="fake-1", max_words=4, save_every=2
        )

    with pytest.raises(Stop):
        build(FailingEncoder())
    encoder = CountingEncoder()
    index = build(encoder)
    assert index.encoded == ["rivers.md"]  # the first two documents came from the cache
    assert all("Rivers" in t or "flow" in t for t in encoder.seen)
    full = build_index(docs, CountingEncoder(), collection=None, encoder_id="x", max_words=4)
    assert index.passages == full.passages and torch.allclose(index.embeddings, full.embeddings)
    with pytest.raises(ValueError, match="save_every"):
        build_index(docs, CountingEncoder(), collection=None, encoder_id="x", save_every=0)


def test_ctrl_c_keeps_the_groups_finished_since_the_last_save(tmp_path, monkeypatch) -> None:
    # `attnkit ask --docs DIR` saved every 2,048 passages (~100 s on one core); a Ctrl-C lost
    # everything since and said only "attnkit: interrupted"
    from attnkit.data.documents import index as index_module

    monkeypatch.setattr(index_module, "STOP_LOSES", 1)  # groups of one document here
    folder = _folder(tmp_path)
    docs = read_folder(folder).documents  # deserts (1 passage), mountains (2), rivers (2)

    class CtrlC(CountingEncoder):
        def __call__(self, texts: list[str]) -> torch.Tensor:
            if any("Rivers" in t for t in texts):
                raise KeyboardInterrupt
            return super().__call__(texts)

    said: list[str] = []

    def build(encoder):
        return build_index(docs, encoder, collection=str(folder), encoder_id="fake-1",
                           max_words=4, save_every=1000, announce=said.append)

    with pytest.raises(KeyboardInterrupt):
        build(CtrlC())
    assert said[-1] == ("interrupted: 3 of 5 passages are encoded and cached; the same command "
                        "continues from there")
    encoder = CountingEncoder()
    index = build(encoder)
    assert index.encoded == ["rivers.md"]  # the first two documents came from the cache
    full = build_index(docs, CountingEncoder(), collection=None, encoder_id="x", max_words=4)
    assert index.passages == full.passages and torch.allclose(index.embeddings, full.embeddings)
