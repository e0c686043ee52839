"""Listen, Attend and Spell: the pyramidal listener against PyTorch's own bidirectional LSTM,
padding invariance, the Seq2Seq protocol with attnkit's decoders, and learning on toy data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnkit.models import beam_search, greedy
from attnkit.models.las import LAS, LASConfig, PyramidalListener, reverse_padded

F, V = 6, 9


def tiny(**kw) -> LAS:
    defaults = dict(listener_dim=12, listener_layers=2, speller_dim=10, embed_dim=5,
                    attention_dim=7, location_channels=3, location_kernel=5, dropout=0.0)
    return LAS(LASConfig(F, V, **(defaults | kw))).eval()


def test_reverse_padded() -> None:
    x = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1)
    out = reverse_padded(x, torch.tensor([5, 3]))
    assert out[..., 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    assert torch.equal(reverse_padded(out, torch.tensor([5, 3])), x)


def test_listener_is_a_pyramid_of_torch_bilstms() -> None:
    torch.manual_seed(0)
    listener = PyramidalListener(F, 8, 2, dropout=0.0).eval()
    refs = []
    for fwd, bwd in zip(listener.forward_lstms, listener.backward_lstms, strict=True):
        ref = nn.LSTM(fwd.input_size, 4, batch_first=True, bidirectional=True)
        with torch.no_grad():
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                getattr(ref, name).copy_(getattr(fwd, name))
                getattr(ref, name + "_reverse").copy_(getattr(bwd, name))
        refs.append(ref)
    lengths = [11, 6, 1]
    x = torch.randn(3, 11, F)
    got, out_lengths = listener(x, torch.tensor(lengths))
    assert out_lengths.tolist() == [3, 2, 1] and got.shape == (3, 3, 8)
    for b, n in enumerate(lengths):
        h = x[b, :n]  # this utterance alone, no padding
        for ref in refs:
            if h.shape[0] % 2:
                h = torch.cat([h, torch.zeros(1, h.shape[1])])  # one zero frame
            pairs = torch.stack([torch.cat([h[2 * t], h[2 * t + 1]]) for t in range(h.shape[0] // 2)])
            h = ref(pairs.unsqueeze(0))[0][0]  # (T/2, 8)
        torch.testing.assert_close(got[b, : h.shape[0]], h, atol=1e-5, rtol=1e-5)
        assert torch.equal(got[b, h.shape[0]:], torch.zeros_like(got[b, h.shape[0]:]))


def test_padding_does_not_change_an_utterance() -> None:
    model = tiny()
    short, long = torch.randn(1, 7, F), torch.randn(1, 16, F)
    padded = torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 9)), long])
    tgt = torch.tensor([[1, 4, 5, 6], [1, 7, 8, 3]])
    with torch.no_grad():
        both, alignment = model.teacher_forced(padded, torch.tensor([7, 16]), tgt)
        alone = model(short, torch.tensor([7]), tgt[:1])
    torch.testing.assert_close(both[:1], alone, atol=1e-5, rtol=1e-5)
    assert alignment.shape == (2, 4, 4)
    torch.testing.assert_close(alignment.sum(-1), torch.ones(2, 4))
    assert torch.equal(alignment[0, :, 2:], torch.zeros(4, 2))  # 7 frames -> 2 states


def test_decoders_work_through_the_protocol() -> None:
    model = tiny()
    src, lengths = torch.randn(3, 12, F), torch.tensor([12, 9, 4])
    g = greedy(model, src, lengths, max_len=6)
    b1 = beam_search(model, src, lengths, beam_size=1, max_len=6, length_penalty_alpha=0.0)
    b4 = beam_search(model, src, lengths, beam_size=4, max_len=6)
    assert g.tokens == b1.tokens
    assert len(b4.tokens) == 3 and g.attention is not None and g.attention[1].shape[1] == 3


def test_bad_input_is_named() -> None:
    model = tiny()
    with pytest.raises(ValueError, match=r"src must be float features \(B, T, 6\)"):
        model(torch.randn(2, 5, F + 1), torch.tensor([5, 5]), torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="src_lengths must lie"):
        model(torch.randn(2, 5, F), torch.tensor([6, 5]), torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="tgt_in"):
        model(torch.randn(2, 5, F), torch.tensor([5, 5]), torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="listener_dim must be even"):
        LASConfig(F, V, listener_dim=7)


def test_learns_a_toy_spelling_task() -> None:
    """Each letter is a fixed random pattern held for 3-5 frames; the model must spell them."""
    torch.manual_seed(0)
    patterns = torch.randn(V, F) * 2
    gen = torch.Generator().manual_seed(1)

    def batch(n: int = 16):
        feats, targets = [], []
        for _ in range(n):
            letters = torch.randint(3, V, (int(torch.randint(2, 5, (1,), generator=gen)),), generator=gen)
            frames = [patterns[c].expand(int(torch.randint(3, 6, (1,), generator=gen)), F) for c in letters]
            feats.append(torch.cat(frames) + 0.3 * torch.randn(sum(len(f) for f in frames), F, generator=gen))
            targets.append(letters.tolist())
        lengths = torch.tensor([len(f) for f in feats])
        x = torch.stack([nn.functional.pad(f, (0, 0, 0, int(lengths.max()) - len(f))) for f in feats])
        tgt_in = torch.tensor([[1, *t] + [0] * (4 - len(t)) for t in targets])
        tgt_out = torch.tensor([[*t, 2] + [0] * (4 - len(t)) for t in targets])
        return x, lengths, tgt_in, tgt_out

    model = tiny(listener_dim=32, speller_dim=32, embed_dim=8, attention_dim=16, listener_layers=1).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        x, lengths, tgt_in, tgt_out = batch()
        logits = model(x, lengths, tgt_in)
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), tgt_out.reshape(-1), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10, losses[::10]
    x, lengths, _, tgt_out = batch(32)
    decoded = greedy(model.eval(), x, lengths, max_len=6).tokens
    truth = [[int(c) for c in row if c > 2] for row in tgt_out]
    accuracy = sum(d == t for d, t in zip(decoded, truth, strict=True)) / 32
    assert accuracy > 0.5, accuracy  # chance of spelling 2-4 letters out of 6 right: < 3 %
