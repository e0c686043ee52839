"""The pointer-generator: its output distribution is See et al.'s mixture, it copies words it
never saw, its coverage is the running sum of attention, and the generic decoders drive it."""

from __future__ import annotations

import pytest
import torch

from attnkit.models import beam_search, greedy
from attnkit.models.pointer_generator import (
    PointerGenerator,
    PointerGeneratorConfig,
    coverage_loss,
)

V = 12


def model(**kw) -> PointerGenerator:
    config = dict(vocab=V, embed_dim=8, hidden_dim=10, dropout=0.0) | kw
    return PointerGenerator(PointerGeneratorConfig(**config)).eval()


def test_output_is_the_mixture_of_generating_and_copying() -> None:
    m = model()
    src = torch.tensor([[5, 13, 7, 13, 12], [6, 12, 9, 0, 0]])  # 12, 13: source-only words
    lengths = torch.tensor([5, 3])
    state = m.start(src, lengths)
    assert state.width == 14  # V + the batch's most source-only words (2)
    # the first step by hand, from the parts (the attention layer is tested on its own)
    x = m.embed(torch.tensor([1, 1]))
    h, _ = m.cell(torch.cat([x, torch.zeros(2, 10)], -1), state.hidden)
    context, a = m.attention(h, state.memory, torch.zeros(2, 5), key_lengths=lengths)
    p_vocab = torch.softmax(m.output(m.project(torch.cat([h, context], -1))), -1)
    p_gen = torch.sigmoid(m.pointer(torch.cat([context, h, x], -1)))[:, 0]
    expected = torch.zeros(2, 14)
    for b in range(2):
        for w in range(14):
            generated = p_gen[b] * p_vocab[b, w] if w < V else 0.0
            copied = sum(a[b, i] for i in range(int(lengths[b])) if int(src[b, i]) == w)
            expected[b, w] = generated + (1 - p_gen[b]) * copied
    log_p, state = m.step(state, torch.tensor([1, 1]))
    torch.testing.assert_close(log_p.exp(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(2))
    assert expected[1, 13] == 0 and torch.isfinite(log_p).all()  # row 1 has no word 13


def test_without_copying_the_output_is_the_vocabulary_distribution() -> None:
    m = model(copy=False)
    src, lengths = torch.tensor([[5, 13, 7]]), torch.tensor([3])
    log_p = m(src, lengths, torch.tensor([[1, 13]]))  # a source-only id fed back reads as <unk>
    assert log_p.shape == (1, 2, V) and m.pointer is None
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(1, 2))


def test_coverage_is_the_sum_of_earlier_attention_and_its_loss_the_formula() -> None:
    m = model()
    src, lengths = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0]]), torch.tensor([4, 2])
    with torch.no_grad():
        d = m.details(src, lengths, torch.tensor([[1, 4, 5, 6], [1, 8, 9, 0]]))
    running = torch.cumsum(d.attention, dim=1) - d.attention  # Σ_{t' < t} a^{t'}
    torch.testing.assert_close(d.coverage, running)
    steps = torch.tensor([[True] * 4, [True, True, True, False]])
    by_hand = (
        sum(
            min(float(d.attention[b, t, i]), float(d.coverage[b, t, i]))
            for b in range(2)
            for t in range(4)
            for i in range(4)
            if steps[b, t]
        )
        / 7
    )
    assert coverage_loss(d.attention, d.coverage, steps).item() == pytest.approx(by_hand, rel=1e-5)
    no_cov = model(coverage=False).details(src, lengths, torch.tensor([[1, 4], [1, 8]]))
    assert torch.all(no_cov.coverage == 0)  # the attention never sees it ...
    with pytest.raises(ValueError, match=r"\(B, T, S\)"):
        coverage_loss(d.attention, d.coverage[:, :2])


def test_it_learns_to_copy_words_it_never_saw() -> None:
    """Target: the word after the marker 4. That word is always outside the vocabulary, so
    only the pointer can produce it."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)

    def batch(n: int):
        src = torch.randint(5, V, (n, 6), generator=gen)
        where = torch.randint(0, 5, (n,), generator=gen)
        word = torch.randint(V, V + 3, (n,), generator=gen)
        src[torch.arange(n), where] = 4
        src[torch.arange(n), where + 1] = word
        return src, torch.full((n,), 6), word

    m = model(hidden_dim=32, embed_dim=16).train()
    optimizer = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        src, lengths, word = batch(32)
        tgt_in = torch.stack([torch.ones_like(word), word], dim=1)
        tgt_out = torch.stack([word, torch.full_like(word, 2)], dim=1)
        log_p = m(src, lengths, tgt_in)
        loss = -log_p.gather(2, tgt_out[..., None]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.3 * sum(losses[:10])
    src, lengths, word = batch(64)
    decoded = greedy(m.eval(), src, lengths, max_len=3).tokens
    accuracy = sum(out[:1] == [int(w)] for out, w in zip(decoded, word, strict=True)) / 64
    assert accuracy > 0.8, accuracy  # chance: 1/3 of the source-only words, and 0 without copying


def test_beam_search_and_greedy_decode_it() -> None:
    m = model()
    src, lengths = torch.tensor([[5, 13, 7], [6, 12, 0]]), torch.tensor([3, 2])
    g = greedy(m, src, lengths, max_len=4)
    b = beam_search(m, src, lengths, beam_size=3, max_len=4)
    for tokens in (*g.tokens, *b.tokens):
        assert all(0 <= t < 14 for t in tokens)
    assert g.attention is not None and g.attention[1].shape[1] == 2
    one = beam_search(m, src, lengths, beam_size=1, max_len=4)
    assert one.tokens == g.tokens  # a beam of one is greedy


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        PointerGeneratorConfig(vocab=10, hidden_dim=7)
    with pytest.raises(ValueError, match="unk"):
        PointerGeneratorConfig(vocab=3)
    with pytest.raises(ValueError, match="src must be"):
        model()(torch.randn(2, 3), torch.tensor([3, 3]), torch.ones(2, 1, dtype=torch.long))
