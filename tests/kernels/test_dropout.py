"""Dropout in the block kernels: the backward pass regenerates exactly the forward's mask, and
the mask drops the right fraction with the right rescaling.

Blocks are shrunk (monkeypatch) so that the small inputs span several query and key blocks.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import attnkit
from tests.kernels.test_additive import additive_score

# The modules (the package re-exports functions of the same names).
chunked_mod = importlib.import_module("attnkit.kernels.chunked")
band_mod = importlib.import_module("attnkit.kernels.band")
additive_mod = importlib.import_module("attnkit.kernels.additive")
weights_mod = importlib.import_module("attnkit.kernels.weights")

P = 0.3


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunked_mod, "_KEY_BLOCK", 16)
    monkeypatch.setattr(chunked_mod, "_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(weights_mod, "_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(band_mod, "_GROUP_ELEMENTS", 1)
    monkeypatch.setattr(additive_mod, "_BLOCK_ELEMENTS", 16 * 8 * 6)


CASES = {
    "chunked": ("chunked", {}),
    "chunked-weights": ("chunked", {"return_weights": True, "causal": True}),
    "local": ("local", {"window": (3, 2)}),
    "local-sinks": ("local", {"window": (3, 2), "normalize": attnkit.Normalizer(
        "softmax_with_sinks", sinks=torch.tensor([0.5], dtype=torch.float64))}),  # every head
    "additive": ("additive", {}),
    "additive-weights": ("additive", {"return_weights": True}),
}


def _kwargs(case: str, dq: int, dk: int) -> tuple[str, dict]:
    backend, kwargs = CASES[case]
    kwargs = dict(kwargs)
    if backend == "additive":
        kwargs["score"] = additive_score(dq, dk)
    return backend, kwargs


@pytest.mark.parametrize("case", list(CASES))
def test_backward_regenerates_the_forward_mask(case: str) -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 20, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 35, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 35, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    backend, kwargs = _kwargs(case, 4, 4)

    def attend(q, k, v):
        torch.manual_seed(7)  # the same mask on every call: a deterministic function
        return attnkit.attention(q, k, v, dropout_p=P, backend=backend, **kwargs)

    plain = attnkit.attention(q, k, v, backend=backend, **kwargs)
    first = attend(q, k, v)
    outs = (first, plain) if not isinstance(first, tuple) else (first[0], plain[0])
    assert not torch.allclose(*outs), "dropout did nothing"
    assert torch.equal(outs[0], (attend(q, k, v)[0] if isinstance(first, tuple) else attend(q, k, v)))
    assert torch.autograd.gradcheck(attend, (q, k, v), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("case", list(CASES))
def test_mask_drops_p_and_rescales_the_rest(case: str) -> None:
    lq, lk = 64, 48
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, lq, 8, generator=gen, dtype=torch.float64)
    k = torch.randn(2, 2, lk, 8, generator=gen, dtype=torch.float64)
    eye = torch.eye(lk, dtype=torch.float64).expand(2, 2, lk, lk)  # out = the dropped weights
    backend, kwargs = _kwargs(case, 8, 8)
    kwargs.pop("return_weights", None)
    weights = attnkit.attention(q, k, eye, backend="reference", return_weights=True, **kwargs)[1]
    dropped = attnkit.attention(q, k, eye, dropout_p=P, backend=backend, **kwargs)
    seen = weights > 1e-9
    kept = dropped[seen] != 0
    torch.testing.assert_close(dropped[seen][kept], weights[seen][kept] / (1 - P))
    n = int(seen.sum())
    dropped_fraction = 1 - kept.double().mean().item()
    assert abs(dropped_fraction - P) < 5 * (P * (1 - P) / n) ** 0.5
    assert torch.all(dropped[~seen].abs() < 1e-9)
