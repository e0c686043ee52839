"""all-MiniLM-L6-v2 in attnkit's layers (real weights) through torch.export and ONNX, with
dynamic batch and length: onnxruntime's hidden states within 1e-4 of PyTorch's, for batches
padded on the right (``KeyLengths`` in PyTorch, the dense mask once exported) and not."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from attnkit.export import Graph, OnnxGraph, save_onnx
from attnkit.models.bert import BertEncoder, load_bert

BATCH, LENGTH = Dim("batch", min=1), Dim("length", min=1)
TEXTS = [
    ["Attention is all you need."],
    ["A man is eating food.", "Two men pushed carts through the woods, slowly, in the rain.", ""],
    ["The cat sat on the mat because it was tired."] * 2,
]


@pytest.fixture(scope="module")
def model() -> BertEncoder:
    return load_bert()


@pytest.fixture(scope="module")
def graph(model: BertEncoder) -> Graph:
    ids, mask = model.tokenize(["an example", "a longer example sentence"])
    return Graph(
        model,
        (ids, mask),
        ({0: BATCH, 1: LENGTH}, {0: BATCH, 1: LENGTH}),
        ["input_ids", "attention_mask"],
        ["last_hidden_state"],
    )


@pytest.fixture(scope="module")
def program(graph: Graph) -> torch.export.ExportedProgram:
    return graph.export()


@pytest.fixture(scope="module")
def onnx_graph(graph, program, tmp_path_factory) -> OnnxGraph:
    return OnnxGraph(save_onnx(graph, program, tmp_path_factory.mktemp("bert") / "bert.onnx"))


def batches(model: BertEncoder):
    """Right-padded batches of real text, and one whose padding is not on the right."""
    for texts in TEXTS:
        yield model.tokenize(texts)
    ids, mask = model.tokenize(TEXTS[1])
    yield ids.flip(1), mask.flip(1)  # padding on the left: a dense mask in PyTorch as well


def test_exported_program_equals_pytorch_at_other_sizes(model, program) -> None:
    for ids, mask in batches(model):
        with torch.no_grad():
            want = model(ids, mask)
        torch.testing.assert_close(program.module()(ids, mask), want, atol=1e-5, rtol=1e-5)


def test_onnxruntime_within_1e4_of_pytorch(model, onnx_graph) -> None:
    for ids, mask in batches(model):
        with torch.no_grad():
            want = model(ids, mask)  # (B, L, 384)
        got = onnx_graph({"input_ids": ids, "attention_mask": mask})["last_hidden_state"]
        assert got.shape == want.shape
        error = float((got - want).abs().max())  # seen: 2e-6 .. 6e-5 (padded positions)
        assert error < 1e-4, (tuple(ids.shape), error)
