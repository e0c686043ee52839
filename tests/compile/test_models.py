"""``attnkit.MultiHeadAttention`` and the Transformer models under
``torch.compile(fullgraph=True)``: a forward pass and a training step (loss and every
parameter's gradient) equal to the uncompiled model's, and a few compiled updates lower the
loss. ``MultiHeadAttention`` is checked against ``torch.nn.MultiheadAttention`` with the same
weights instead. Tiny sizes, no dropout (so the two runs see the same function), ``aot_eager``
(what is tested is the graph capture; inductor is tested per kernel)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import attnkit
from attnkit.models.bert import BertConfig, BertEncoder
from attnkit.models.music_transformer import MusicTransformer, MusicTransformerConfig
from attnkit.models.transformer import Seq2SeqTransformer, TransformerConfig


def _grads(model: nn.Module, loss: Tensor) -> dict[str, Tensor]:
    params = dict(model.named_parameters())
    found = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: g for n, g in zip(params, found, strict=True) if g is not None}


def check_compiled_training(
    model: nn.Module, inputs: tuple[Tensor, ...], loss_of: Callable[[Tensor], Tensor]
) -> None:
    """A compiled forward pass and training step equal the uncompiled ones; then three compiled
    SGD updates lower the loss."""
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)
    model.train()
    got, want = loss_of(compiled(*inputs)), loss_of(model(*inputs))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got_grads, want_grads = _grads(model, got), _grads(model, want)
    assert got_grads.keys() == want_grads.keys()
    for name, g in got_grads.items():
        torch.testing.assert_close(g, want_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = loss_of(compiled(*inputs))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses


def test_translator_compiles_forward_and_training_step() -> None:
    config = TransformerConfig(src_vocab=20, tgt_vocab=22, width=32, heads=4, kv_heads=2,
                               ff_dim=64, encoder_layers=1, decoder_layers=1, dropout=0.0)
    src, lengths = torch.randint(4, 20, (3, 9)), torch.tensor([9, 5, 7])
    tgt = torch.randint(4, 22, (3, 6))
    check_compiled_training(
        Seq2SeqTransformer(config), (src, lengths, tgt),
        lambda logits: F.cross_entropy(logits.reshape(-1, 22), tgt.reshape(-1)),
    )


def test_bert_encoder_compiles_forward_and_training_step() -> None:
    """Under compile the padding stays a dense mask (its values are unknown while tracing);
    eager takes the right-padded batch as key lengths: two paths, one answer."""
    config = BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.0)
    ids, mask = torch.randint(1, 30, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    check_compiled_training(BertEncoder(config), (ids, mask),
                            lambda h: (h * mask.unsqueeze(-1)).square().mean())


def test_music_transformer_with_relative_positions_compiles() -> None:
    config = MusicTransformerConfig(vocab_size=25, width=32, heads=4, layers=1, ff_dim=64,
                                    dropout=0.0, positions="relative", max_len=32)
    events = torch.randint(1, 25, (2, 12))
    check_compiled_training(
        MusicTransformer(config), (events,),
        lambda logits: F.cross_entropy(logits.reshape(-1, 25), events.reshape(-1)),
    )


class _Attend(nn.Module):
    """Self-attention with padding, returning the output and the head-averaged weights."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: Tensor, padding: Tensor) -> tuple[Tensor, Tensor]:
        out, weights = self.attention(x, x, x, key_padding_mask=padding)
        return out, weights


def test_multihead_attention_compiles_and_matches_torch() -> None:
    """Forward (output and weights: the weights path) and the gradients of a training step
    equal ``torch.nn.MultiheadAttention``'s with the same weights."""
    ours = attnkit.MultiHeadAttention(32, 4)
    theirs = nn.MultiheadAttention(32, 4)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(7, 3, 32)  # (L, B, E)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, 4:] = True
    compiled = torch.compile(_Attend(ours), fullgraph=True, backend="aot_eager")
    out, weights = compiled(x, padding)
    want_out, want_weights = _Attend(theirs)(x, padding)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights, want_weights, rtol=1e-5, atol=1e-5)
    target = torch.randn(7, 3, 32)
    got = _grads(ours, F.mse_loss(out, target) + weights.square().sum())
    want = _grads(theirs, F.mse_loss(want_out, target) + want_weights.square().sum())
    for name, g in got.items():
        torch.testing.assert_close(g, want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_windowed_multihead_attention_compiles_and_trains() -> None:
    """``window=`` (the local kernel, a custom operator under compile) in a training step."""
    layer = attnkit.MultiHeadAttention(32, 4, batch_first=True, window=(2, 1))
    x = torch.randn(2, 40, 32)

    class Causal(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x: Tensor) -> Tensor:
            return self.layer(x, x, x, need_weights=False, is_causal=True)[0]

    check_compiled_training(Causal(), (x,), lambda out: (out - x.flip(1)).square().mean())
