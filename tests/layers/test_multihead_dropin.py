"""attnkit.MultiHeadAttention as a drop-in for torch.nn.MultiheadAttention: signature and
defaults, state dicts both ways, inside torch's Transformer layers in train and eval mode,
and each documented refusal or convention difference (docs/reliability.md)."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch import nn

import attnkit
from attnkit import MultiHeadAttention

E, H, B, L, S = 16, 4, 3, 5, 7


def test_signature_and_defaults_are_torchs_with_attnkit_extras_keyword_only() -> None:
    for method in ("__init__", "forward"):
        theirs = inspect.signature(getattr(nn.MultiheadAttention, method)).parameters
        ours = inspect.signature(getattr(MultiHeadAttention, method)).parameters
        shared = [p for p in ours.values() if p.name in theirs]
        assert [p.name for p in shared] == list(theirs), method  # same names, same order
        for p in shared:
            want = theirs[p.name]
            if method == "forward" and p.name in ("key", "value"):
                assert p.default is None  # attnkit: optional (self-attention); torch: required
            else:
                assert (p.kind, p.default) == (want.kind, want.default), (method, p.name)
        extras = [p for p in ours.values() if p.name not in theirs]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extras), method
    assert {p.name for p in extras} == {"cache"}


def test_default_layout_is_sequence_first_like_torch() -> None:
    torch.manual_seed(1)
    theirs = nn.MultiheadAttention(32, 4).eval()
    ours = MultiHeadAttention(32, 4).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(7, 3, 32)  # (L, B, E): torch's default layout
    want, want_w = theirs(x, x, x)
    got, got_w = ours(x, x, x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_w, want_w, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(("kdim", "vdim"), [(None, None), (6, 10)])
@pytest.mark.parametrize("bias", [True, False])
def test_state_dicts_load_both_ways_and_round_trip(kdim, vdim, bias) -> None:
    theirs = nn.MultiheadAttention(E, H, bias=bias, kdim=kdim, vdim=vdim, batch_first=True)
    ours = MultiHeadAttention(E, H, bias=bias, kdim=kdim, vdim=vdim, batch_first=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())  # same names, same order
    ours.load_state_dict(theirs.state_dict())  # strict: torch -> attnkit
    q = torch.randn(B, L, E)
    k, v = torch.randn(B, S, kdim or E), torch.randn(B, S, vdim or E)
    torch.testing.assert_close(ours(q, k, v)[0], theirs(q, k, v)[0], atol=1e-5, rtol=1e-4)
    again = nn.MultiheadAttention(E, H, bias=bias, kdim=kdim, vdim=vdim, batch_first=True)
    again.load_state_dict(ours.state_dict())  # attnkit -> torch
    copy = MultiHeadAttention(E, H, bias=bias, kdim=kdim, vdim=vdim, batch_first=True)
    copy.load_state_dict(ours.state_dict())  # attnkit -> attnkit
    for module in (again, copy):
        torch.testing.assert_close(module(q, k, v)[0], theirs(q, k, v)[0], atol=1e-5, rtol=1e-4)
    assert dict(ours.named_parameters()).keys() == dict(theirs.named_parameters()).keys()


@pytest.mark.parametrize(("kdim", "vdim"), [(None, None), (6, 10)])
@pytest.mark.parametrize("bias", [True, False])
def test_state_dicts_of_earlier_attnkit_versions_still_load(kdim, vdim, bias) -> None:
    """Earlier attnkit versions saved three Linears (q_proj/k_proj/v_proj.weight and .bias):
    runs trained then must still load and give torch's answers with the same weights."""
    theirs = nn.MultiheadAttention(E, H, bias=bias, kdim=kdim, vdim=vdim, batch_first=True)
    if theirs.in_proj_weight is not None:
        wq, wk, wv = theirs.in_proj_weight.detach().chunk(3)
    else:
        wq, wk, wv = (getattr(theirs, f"{p}_proj_weight").detach() for p in "qkv")
    old = {"q_proj.weight": wq, "k_proj.weight": wk, "v_proj.weight": wv}
    if bias:
        for p, b in zip("qkv", theirs.in_proj_bias.detach().chunk(3), strict=True):
            old[f"{p}_proj.bias"] = b
    old.update({f"out_proj.{n}": t for n, t in theirs.out_proj.state_dict().items()})
    ours = MultiHeadAttention(E, H, bias=bias, kdim=kdim, vdim=vdim, batch_first=True)
    ours.load_state_dict(old)  # strict
    q = torch.randn(B, L, E)
    k, v = torch.randn(B, S, kdim or E), torch.randn(B, S, vdim or E)
    torch.testing.assert_close(ours(q, k, v)[0], theirs(q, k, v)[0], atol=1e-5, rtol=1e-4)


def test_grouped_query_state_dict_round_trips_with_torchs_separate_names() -> None:
    ours = MultiHeadAttention(E, H, batch_first=True, num_kv_heads=2)
    shapes = {name: tuple(t.shape) for name, t in ours.state_dict().items()}
    assert shapes == {
        "q_proj_weight": (E, E), "k_proj_weight": (8, E), "v_proj_weight": (8, E),
        "in_proj_bias": (E + 16,), "out_proj.weight": (E, E), "out_proj.bias": (E,),
    }
    copy = MultiHeadAttention(E, H, batch_first=True, num_kv_heads=2)
    copy.load_state_dict(ours.state_dict())
    x = torch.randn(B, L, E)
    torch.testing.assert_close(copy(x)[0], ours(x)[0])


def _encoder_layers(batch_first: bool, norm_first: bool):
    theirs = nn.TransformerEncoderLayer(
        E, H, dim_feedforward=32, dropout=0.0, batch_first=batch_first, norm_first=norm_first
    )
    swapped = nn.TransformerEncoderLayer(
        E, H, dim_feedforward=32, dropout=0.0, batch_first=batch_first, norm_first=norm_first
    )
    swapped.load_state_dict(theirs.state_dict())
    swapped.self_attn = MultiHeadAttention.from_torch(theirs.self_attn)
    return theirs, swapped


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("mode", ["train", "eval", "eval-no-grad"])
def test_swapped_into_torch_encoder_layer_in_train_and_eval(batch_first, norm_first, mode):
    theirs, swapped = _encoder_layers(batch_first, norm_first)
    for layer in (theirs, swapped):
        layer.train(mode == "train")
    x = torch.randn(B, L, E) if batch_first else torch.randn(L, B, E)
    padding = torch.zeros(B, L, dtype=torch.bool)
    padding[1, 3:] = True
    calls = []
    swapped.self_attn.attention_recorder = lambda module, w: calls.append(w)  # attnkit ran?
    with torch.set_grad_enabled(mode != "eval-no-grad"):
        for kwargs in ({}, {"src_key_padding_mask": padding}):
            want = theirs(x, **kwargs)
            got = swapped(x, **kwargs)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert len(calls) == 2  # attnkit's forward ran, in this mode too (no fused bypass)


def test_swapped_into_torch_encoder_and_decoder_stacks() -> None:
    theirs, swapped = _encoder_layers(batch_first=True, norm_first=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "enable_nested_tensor is True, but ..."
        want_stack = nn.TransformerEncoder(theirs, 2, enable_nested_tensor=False).eval()
        got_stack = nn.TransformerEncoder(swapped, 2).eval()
    x = torch.randn(B, L, E)
    causal = nn.Transformer.generate_square_subsequent_mask(L)
    with torch.no_grad():
        torch.testing.assert_close(
            got_stack(x, mask=causal, is_causal=True), want_stack(x, mask=causal, is_causal=True),
            atol=1e-5, rtol=1e-4,
        )
    decoder = nn.TransformerDecoderLayer(E, H, dim_feedforward=32, dropout=0.0, batch_first=True)
    ours = nn.TransformerDecoderLayer(E, H, dim_feedforward=32, dropout=0.0, batch_first=True)
    ours.load_state_dict(decoder.state_dict())
    ours.self_attn = MultiHeadAttention.from_torch(decoder.self_attn)
    ours.multihead_attn = MultiHeadAttention.from_torch(decoder.multihead_attn)
    memory = torch.randn(B, S, E)
    for module in (decoder, ours):
        module.eval()
    torch.testing.assert_close(
        ours(x, memory, tgt_mask=causal, tgt_is_causal=True),
        decoder(x, memory, tgt_mask=causal, tgt_is_causal=True),
        atol=1e-5, rtol=1e-4,
    )


def test_returned_weights_are_before_dropout_unlike_torchs() -> None:
    theirs = nn.MultiheadAttention(E, H, dropout=0.5, batch_first=True).train()
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(B, L, E)
    _, torch_weights = theirs(x, x, x, average_attn_weights=False)
    assert not torch.allclose(torch_weights.sum(-1), torch.ones(B, H, L))  # post-dropout
    _, weights = ours(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, L))  # the probabilities
    _, eval_weights = ours.eval()(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(weights, eval_weights)


def test_nested_tensors_are_refused_by_name() -> None:
    layer = MultiHeadAttention(E, H, batch_first=True)
    nested = torch.nested.nested_tensor(
        [torch.randn(3, E), torch.randn(5, E)], layout=torch.jagged
    )
    with pytest.raises(TypeError, match=r"query is a nested \(jagged\) tensor"):
        layer(nested, nested, nested)
    q = torch.nested.nested_tensor(
        [torch.randn(H, 3, 4), torch.randn(H, 5, 4)], layout=torch.jagged
    )
    with pytest.raises(TypeError, match=r"q is a nested \(jagged\) tensor.*KeyLengths"):
        attnkit.attention(q, q, q)


def test_zero_heads_are_refused_as_torchs_module_refuses_them() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        nn.MultiheadAttention(E, 0)
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 0"):
        MultiHeadAttention(E, 0)
    q, k = torch.randn(2, 0, 5, 4), torch.randn(2, 2, 5, 4)
    assert nn.functional.scaled_dot_product_attention(q, q, q).shape == (2, 0, 5, 4)
    with pytest.raises(ValueError, match="q must have at least one head"):
        attnkit.attention(q, k, k)
    with pytest.raises(ValueError, match="heads"):
        attnkit.attention(q, q, q)


@pytest.mark.parametrize("option", ["add_bias_kv", "add_zero_attn"])
def test_bias_kv_and_zero_attn_are_refused_by_constructor_and_from_torch(option) -> None:
    with pytest.raises(ValueError, match="add_bias_kv and add_zero_attn are not supported"):
        MultiHeadAttention(E, H, **{option: True})
    with pytest.raises(ValueError, match="add_bias_kv and add_zero_attn are not supported"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(E, H, **{option: True}))
    with pytest.raises(TypeError, match="static_k"):
        MultiHeadAttention(E, H)(torch.randn(L, B, E), static_k=torch.randn(B * H, L, E // H))


def test_causal_bias_as_attn_mask_is_refused_as_torch_refuses_it() -> None:
    from torch.nn.attention.bias import causal_lower_right

    theirs = nn.MultiheadAttention(E, H, batch_first=True)
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(B, L, E)
    with pytest.raises(RuntimeError):
        theirs(x, x, x, attn_mask=causal_lower_right(L, L))
    with pytest.raises(TypeError, match=r"attn_mask: torch\.nn\.MultiheadAttention does not take"):
        ours(x, x, x, attn_mask=causal_lower_right(L, L))
