"""attnkit's layers and models hand key lengths, causality and windows to attnkit.attention as
structure (KeyLengths, causal=True, window=...), not as dense masks: the answers do not change
(checked against the dense-mask path and torch) and the dispatch can reach the kernels that
exploit the structure."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import attnkit
from attnkit import KeyLengths, MultiHeadAttention, masks
from attnkit.layers import (
    AdditiveAttention,
    CoverageAttention,
    LocationAwareAttention,
    LuongAttention,
)

E, H, B, L = 16, 4, 3, 9


@pytest.fixture
def calls(monkeypatch) -> list[dict[str, Any]]:
    """The keyword arguments of every attnkit.attention call the layers make."""
    seen: list[dict[str, Any]] = []
    original = attnkit.functional.attention

    def recording(q, k, v, **kwargs):
        seen.append(kwargs)
        return original(q, k, v, **kwargs)

    for module in ("multihead", "single", "coverage", "location_aware"):
        monkeypatch.setattr(f"attnkit.layers.{module}.attention", recording)
    return seen


def test_multihead_key_lengths_are_structure_and_equal_the_bool_mask(calls) -> None:
    theirs = nn.MultiheadAttention(E, H, batch_first=True).eval()
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(B, L, E)
    lengths = torch.tensor([9, 4, 1])
    padding = ~masks.key_padding(lengths, L).reshape(B, L)  # (B, L) True = padding
    want, want_w = theirs(x, x, x, key_padding_mask=padding)
    got, got_w = ours(x, x, x, key_padding_mask=KeyLengths(lengths))
    assert isinstance(calls[-1]["mask"], KeyLengths)
    dense, dense_w = ours(x, x, x, key_padding_mask=padding)
    assert isinstance(calls[-1]["mask"], torch.Tensor)
    for a, b in ((got, want), (got_w, want_w), (got, dense), (got_w, dense_w)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="KeyLengths has 2 entries but the batch is 3"):
        ours(x, x, x, key_padding_mask=KeyLengths(lengths[:2]))


def test_multihead_key_lengths_with_an_attn_mask_join_it_densely(calls) -> None:
    ours = MultiHeadAttention(E, H, batch_first=True).eval()
    x = torch.randn(B, L, E)
    lengths = torch.tensor([9, 4, 1])
    attn_mask = torch.rand(L, L) > 0.7  # True = hidden
    padding = ~masks.key_padding(lengths, L).reshape(B, L)
    got = ours(x, x, x, key_padding_mask=KeyLengths(lengths), attn_mask=attn_mask)[0]
    want = ours(x, x, x, key_padding_mask=padding, attn_mask=attn_mask)[0]
    torch.testing.assert_close(got, want)


def test_torch_is_causal_hint_with_the_causal_mask_becomes_causal_structure(calls) -> None:
    """torch.nn.TransformerEncoder passes the square causal mask with is_causal=True."""
    theirs = nn.MultiheadAttention(E, H, batch_first=True).eval()
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(B, L, E)
    for causal_mask in (nn.Transformer.generate_square_subsequent_mask(L),  # float -inf
                        torch.ones(L, L, dtype=torch.bool).triu(1)):  # bool
        want = theirs(x, x, x, attn_mask=causal_mask, is_causal=True)[0]
        got = ours(x, x, x, attn_mask=causal_mask, is_causal=True)[0]
        assert calls[-1]["causal"] is True and calls[-1]["mask"] is None
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    not_causal = torch.rand(L, L) > 0.5
    not_causal.fill_diagonal_(False)
    ours(x, x, x, attn_mask=not_causal, is_causal=True)  # a wrong hint: the mask counts
    assert calls[-1]["causal"] is False and calls[-1]["mask"] is not None


def test_causal_and_window_structure_reach_kernels_a_dense_mask_does_not() -> None:
    """What the structure buys at dispatch: a long causal pass stays on SDPA's is_causal path
    (the dense mask would be too big for it), and a window reaches the banded kernel."""
    n = 6000
    q = torch.zeros(1, 1, n, 8)
    dense_causal = masks.causal(n, n)
    assert attnkit.explain_dispatch(q, q, q, mask=dense_causal).kernel != "sdpa"
    assert attnkit.explain_dispatch(q, q, q, causal=True).kernel == "sdpa"
    q = torch.zeros(1, 1, 512, 8)
    assert attnkit.explain_dispatch(q, q, q, window=(16, 0)).kernel == "local"
    assert attnkit.explain_dispatch(q, q, q, mask=masks.window(512, 512, 16, 0)).kernel != "local"


def test_multihead_window_is_structure_and_equals_the_dense_band(calls) -> None:
    local = MultiHeadAttention(E, H, batch_first=True, window=(3, 0)).eval()
    x = torch.randn(B, 40, E)
    got = local(x, is_causal=True, need_weights=False)[0]
    assert calls[-1]["window"] == (3, 0) and calls[-1]["causal"] is True
    band = ~masks.window(40, 40, 3, 0)  # PyTorch polarity: True = hidden
    plain = MultiHeadAttention(E, H, batch_first=True).eval()
    plain.load_state_dict(local.state_dict())
    torch.testing.assert_close(got, plain(x, attn_mask=band, need_weights=False)[0])
    with pytest.raises(ValueError, match="window must be"):
        MultiHeadAttention(E, H, window=(3,))


@pytest.mark.parametrize(
    "layer",
    [AdditiveAttention(E, E), LuongAttention(E, score="general"), CoverageAttention(E, E),
     LocationAwareAttention(E, E, kernel_size=3)],
    ids=["additive", "luong", "coverage", "location-aware"],
)
def test_single_head_key_lengths_are_structure(layer, calls) -> None:
    layer.eval()
    query, keys = torch.randn(B, E), torch.randn(B, L, E)
    lengths = torch.tensor([9, 4, 1])
    previous = torch.softmax(torch.randn(B, L), -1)  # coverage / previous alignment
    extra = (previous,) if isinstance(layer, (CoverageAttention, LocationAwareAttention)) else ()
    got = layer(query, keys, *extra, key_lengths=lengths)
    assert isinstance(calls[-1]["mask"], KeyLengths)
    real = masks.key_padding(lengths, L).reshape(B, L)  # (B, L) True = may attend
    want = layer(query, keys, *extra, mask=real)
    assert isinstance(calls[-1]["mask"], torch.Tensor)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_transformer_model_passes_source_lengths_as_structure(calls) -> None:
    from attnkit.models import Seq2SeqTransformer, TransformerConfig

    model = Seq2SeqTransformer(TransformerConfig(20, 20, width=16, heads=2, ff_dim=32,
                                                 encoder_layers=1, decoder_layers=1)).eval()
    src = torch.randint(4, 20, (B, 7))
    lengths = torch.tensor([7, 5, 2])
    tgt = torch.randint(4, 20, (B, 4))
    logits = model(src, lengths, tgt)
    masked = [c["mask"] for c in calls]
    assert sum(isinstance(m, KeyLengths) for m in masked) == 2  # encoder self + cross
    padding = ~masks.key_padding(lengths, 7).reshape(B, 7)  # the dense path, True = padding
    memory = model.encoder(model.src_embed(src), padding)
    want = model._decode(model.tgt_embed(tgt), memory, padding)
    torch.testing.assert_close(logits, want)


def test_bert_left_and_right_padding_are_structure(calls) -> None:
    from attnkit.models.bert import BertConfig, BertEncoder

    model = BertEncoder(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32)).eval()
    ids = torch.randint(1, 30, (B, 6))
    real = masks.key_padding(torch.tensor([6, 3, 1]), 6).reshape(B, 6)
    got = model(ids, real)
    assert isinstance(calls[-1]["mask"], KeyLengths)
    want = model.encoder(model.embeddings(ids), ~real)  # the dense path
    torch.testing.assert_close(got, want)
    left = real.flip(-1)  # left padding: KeyLengths with starts
    got = model(ids, left)
    assert isinstance(calls[-1]["mask"], KeyLengths)
    assert calls[-1]["mask"].starts.tolist() == [0, 3, 5]
    torch.testing.assert_close(got, model.encoder(model.embeddings(ids), ~left))
    holes = real.clone()
    holes[0, 2] = False  # a pad between real tokens: not a run, a dense mask
    got = model(ids, holes)
    assert isinstance(calls[-1]["mask"], torch.Tensor)
    torch.testing.assert_close(got, model.encoder(model.embeddings(ids), ~holes))
