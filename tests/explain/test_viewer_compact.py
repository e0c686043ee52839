"""Long inputs in the HTML viewer: each query's top-k keys and the rest's mass
(attnkit.explain.compact), decoded from the page and checked against the weights (sorted with
numpy, not with the code under test)."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch

from attnkit.explain import render_viewer
from attnkit.explain.compact import TopK, choose_k, concat_queries, top_k
from attnkit.explain.viewer import COMPACT_BUDGET, DENSE_LIMIT, FIXED_POINT


def embedded(page: str) -> dict:
    match = re.search(r'id="attnkit-data">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))


def decode(layer: dict, heads: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = layer["k"]
    index_type = "<u4" if layer["indexBytes"] == 4 else "<u2"
    index = np.frombuffer(base64.b64decode(layer["index"]), index_type).reshape(heads, queries, k)
    weight = np.frombuffer(base64.b64decode(layer["weight"]), "<u2").reshape(heads, queries, k)
    rest = np.frombuffer(base64.b64decode(layer["rest"]), "<u2").reshape(heads, queries)
    return index, weight / FIXED_POINT, rest / FIXED_POINT


def softmax_layers(n: int, h: int, lq: int, lk: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(4 * torch.randn(n, h, lq, lk, generator=g), dim=-1)


def test_top_k_keeps_the_largest_and_the_rest() -> None:
    w = softmax_layers(1, 2, 5, 9)[0]  # (H, Lq, Lk)
    kept = top_k(w, 3)
    reference = np.sort(w.numpy(), axis=-1)[..., ::-1][..., :3]
    np.testing.assert_allclose(kept.values.numpy(), reference, atol=1e-7)
    picked = np.take_along_axis(w.numpy(), kept.indices.numpy(), axis=-1)
    np.testing.assert_allclose(picked, reference, atol=1e-7)
    np.testing.assert_allclose(kept.rest.numpy(), 1 - reference.sum(-1), atol=1e-6)
    two = kept.first(2)
    np.testing.assert_allclose(two.rest.numpy(), 1 - reference[..., :2].sum(-1), atol=1e-6)
    empty = top_k(torch.zeros(1, 2, 4), 2)  # a query that sees no key: nothing left over
    assert float(empty.rest.abs().max()) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        top_k(w, 0)


def test_chunks_join_with_shifted_keys() -> None:
    a, b = top_k(softmax_layers(1, 2, 4, 4)[0], 3), top_k(softmax_layers(1, 2, 2, 2, 1)[0], 3)
    joined = concat_queries([a, b], [0, 4], 6)
    assert joined.shape == (2, 6, 6) and joined.k == 3
    assert int(joined.indices[:, 4:, :2].min()) >= 4  # the second chunk's keys
    assert float(joined.values[:, 4:, 2].abs().max()) == 0.0  # padded: k was 2 there
    assert choose_k(1000, 4 * 1000 * 7) == 7 and choose_k(10**9, 10) == 1


def test_a_big_input_becomes_a_compact_page_that_says_so() -> None:
    n, h, length = 2, 4, 400  # 1.28 M weights > DENSE_LIMIT
    assert n * h * length * length > DENSE_LIMIT
    attn = softmax_layers(n, h, length, length)
    tokens = [f"t{i}" for i in range(length)]
    page = render_viewer(attn, tokens=tokens, notes=["cut into 2 chunks"])
    data = embedded(page)
    assert data["compact"] and data["notes"][0] == "cut into 2 chunks"
    k = choose_k(n * h * length, COMPACT_BUDGET)
    assert "strongest keys per head" in data["notes"][1] and f"its {k} " in data["notes"][1]
    for i, layer in enumerate(data["layers"]):
        index, weight, rest = decode(layer, h, length)
        full = attn[i].numpy()
        reference = np.sort(full, axis=-1)[..., ::-1][..., :k]
        np.testing.assert_allclose(weight, reference, atol=0.5 / FIXED_POINT + 1e-7)
        np.testing.assert_allclose(
            np.take_along_axis(full, index.astype(np.int64), -1), weight, atol=1e-4
        )
        np.testing.assert_allclose(rest, 1 - reference.sum(-1), atol=1e-4)


def test_top_k_layers_are_shown_as_given_and_checked() -> None:
    w = softmax_layers(1, 3, 6, 6)[0]
    data = embedded(render_viewer({"enc.0": top_k(w, 2)}, tokens=list("abcdef")))
    assert data["compact"] and data["layers"][0]["k"] == 2 and data["layers"][0]["count"] == 3
    with pytest.raises(ValueError, match=r"layer 'enc.0'.*\(3, 6, 6\).*5 query tokens"):
        render_viewer({"enc.0": top_k(w, 2)}, tokens=list("abcde"))
    bad = TopK(torch.full((1, 2, 1), float("nan")), torch.zeros(1, 2, 1, dtype=torch.long),
               torch.zeros(1, 2), 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        render_viewer([bad], tokens=["a", "b"])
    with pytest.raises(TypeError, match="wrap a single TopK"):
        render_viewer(top_k(w, 2), tokens=list("abcdef"))  # type: ignore[arg-type]
