"""attnkit.MultiHeadAttention through torch.export and ONNX with dynamic batch and length,
checked against torch.nn.MultiheadAttention with the same weights: plain, windowed (which
exports as sdpa with the dense band mask) and returning weights (the reference kernel)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.export import Dim

import attnkit
from attnkit.export import Graph, OnnxGraph, save_onnx

E, H, WINDOW = 32, 4, (8, 8)
BATCH, LENGTH = Dim("batch", min=1), Dim("length", min=1)
SIZES = [(1, 1), (3, 7), (2, 33), (4, 64)]  # (batch, length), none the example's (2, 20)


class Three(nn.Module):
    """Three drop-in modules (PyTorch's layout ``(L, B, E)``) on one input and padding."""

    def __init__(self) -> None:
        super().__init__()
        self.plain = attnkit.MultiHeadAttention(E, H)
        self.local = attnkit.MultiHeadAttention(E, H, window=WINDOW)
        self.weighted = attnkit.MultiHeadAttention(E, H)

    def forward(self, x: Tensor, padding: Tensor) -> tuple[Tensor, ...]:
        plain = self.plain(x, x, x, key_padding_mask=padding, need_weights=False)[0]
        local = self.local(x, x, x, key_padding_mask=padding, need_weights=False)[0]
        out, weights = self.weighted(x, x, x, key_padding_mask=padding)  # weights (B, L, L)
        return plain, local, out, weights


def inputs(batch: int, length: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    """``x (L, B, E)`` and ``padding (B, L)`` (True = padding, at most 3 keys at the end)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(length, batch, E, generator=generator)
    pads = torch.randint(0, 4, (batch,), generator=generator).clamp_max(length - 1)  # (B,)
    padding = torch.arange(length) >= (length - pads).unsqueeze(1)  # (B, L)
    return x, padding


def torch_answers(module: Three, x: Tensor, padding: Tensor) -> tuple[Tensor, ...]:
    """The same three answers from torch.nn.MultiheadAttention: the window as its mask."""
    twins = {}
    for name in ("plain", "local", "weighted"):
        twin = nn.MultiheadAttention(E, H).eval()
        twin.load_state_dict(getattr(module, name).state_dict())
        twins[name] = twin
    length = x.shape[0]
    offset = torch.arange(length).unsqueeze(0) - torch.arange(length).unsqueeze(1)  # key − query
    outside = (offset < -WINDOW[0]) | (offset > WINDOW[1])  # (L, L) True = hidden
    with torch.no_grad():
        plain = twins["plain"](x, x, x, key_padding_mask=padding, need_weights=False)[0]
        local = twins["local"](
            x, x, x, key_padding_mask=padding, attn_mask=outside, need_weights=False
        )[0]
        out, weights = twins["weighted"](x, x, x, key_padding_mask=padding)
    return plain, local, out, weights


@pytest.fixture(scope="module")
def graph() -> Graph:
    torch.manual_seed(0)
    return Graph(
        Three().eval(),
        inputs(2, 20),
        ({0: LENGTH, 1: BATCH}, {0: BATCH, 1: LENGTH}),
        ["x", "padding"],
        ["plain", "local", "out", "weights"],
    )


@pytest.fixture(scope="module")
def program(graph: Graph) -> torch.export.ExportedProgram:
    return graph.export()


@pytest.fixture(scope="module")
def onnx_graph(graph: Graph, program, tmp_path_factory) -> OnnxGraph:
    path = save_onnx(graph, program, tmp_path_factory.mktemp("mha") / "mha.onnx")
    return OnnxGraph(path)


@pytest.mark.parametrize(("batch", "length"), SIZES)
def test_exported_program_equals_torch_at_other_sizes(graph, program, batch, length) -> None:
    x, padding = inputs(batch, length)
    with torch.no_grad():
        got = program.module()(x, padding)
    theirs = torch_answers(graph.module, x, padding)
    for name, a, b in zip(graph.output_names, got, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize(("batch", "length"), SIZES)
def test_onnxruntime_within_1e4_of_pytorch(graph, onnx_graph, batch, length) -> None:
    x, padding = inputs(batch, length)
    got = onnx_graph({"x": x, "padding": padding})
    with torch.no_grad():
        eager = graph.module(x, padding)  # attnkit in PyTorch (local kernel where it pays)
    theirs = torch_answers(graph.module, x, padding)
    for name, want, twin in zip(graph.output_names, eager, theirs, strict=True):
        assert got[name].shape == want.shape, name
        assert (got[name] - want).abs().max() < 1e-4, name
        assert (got[name] - twin).abs().max() < 1e-4, name


def test_onnx_axes_are_named_and_dynamic(onnx_graph) -> None:
    shapes = {i.name: i.shape for i in onnx_graph.session.get_inputs()}
    assert shapes == {"x": ["length", "batch", E], "padding": ["batch", "length"]}


class Dispatched(nn.Module):
    """Records what :func:`attnkit.explain_dispatch` says while it is traced."""

    def forward(self, q: Tensor) -> Tensor:
        self.windowed = attnkit.explain_dispatch(q, q, q, window=WINDOW)
        self.weights = attnkit.explain_dispatch(q, q, q, return_weights=True)
        return attnkit.attention(q, q, q, window=WINDOW)


def test_under_export_a_window_runs_as_sdpa_and_dispatch_says_why() -> None:
    q = torch.randn(2, 2, 300, 8)  # export takes a size of 1 for a constant: 2 here
    eager = attnkit.explain_dispatch(q, q, q, window=WINDOW)
    assert eager.kernel == "local"  # a narrow band of a long input: local, when not traced
    module = Dispatched()
    dims = ({0: BATCH, 2: LENGTH},)
    program = torch.export.export(module, (q,), dynamic_shapes=dims)
    assert module.windowed.kernel == "sdpa"
    assert "does not export" in module.windowed.passed_over["local"]
    assert module.weights.kernel == "reference"
    assert "does not export" in module.weights.passed_over["chunked"]
    other = torch.randn(1, 2, 500, 8)
    want = torch.nn.functional.scaled_dot_product_attention(
        other, other, other, attn_mask=attnkit.masks.window(500, 500, *WINDOW)
    )
    torch.testing.assert_close(program.module()(other), want, atol=1e-5, rtol=1e-5)


def test_a_named_kernel_that_does_not_export_is_refused() -> None:
    class Local(nn.Module):
        def forward(self, q: Tensor) -> Tensor:
            return attnkit.attention(q, q, q, window=WINDOW, backend="local")

    q = torch.randn(1, 2, 64, 8)
    with pytest.raises(ValueError, match=r"backend 'local' cannot serve.*does not export"):
        torch.export.export(Local(), (q,), dynamic_shapes=({2: LENGTH},))


def test_value_reading_paths_step_aside_while_tracing() -> None:
    """PyTorch's causal hint (``is_causal`` with the square mask) and attnkit's NaN checks read
    values; under export the mask is used as given and the checks are off."""

    class Hinted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = attnkit.MultiHeadAttention(E, H, batch_first=True)

        def forward(self, x: Tensor) -> Tensor:
            future = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
            return self.mha(x, x, x, attn_mask=future, is_causal=True, need_weights=False)[0]

    module = Hinted().eval()
    attnkit.set_checks(True)
    try:
        program = torch.export.export(
            module, (torch.randn(2, 6, E),), dynamic_shapes=({0: BATCH, 1: LENGTH},)
        )
    finally:
        attnkit.set_checks(False)
    x = torch.randn(3, 11, E)
    with torch.no_grad():
        want = module.mha(x, is_causal=True, need_weights=False)[0]
    torch.testing.assert_close(program.module()(x), want, atol=1e-5, rtol=1e-5)
