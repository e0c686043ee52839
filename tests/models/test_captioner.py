"""Show, Attend and Tell: the grid, padding, the regulariser against its formula, incremental
decoding equal to teacher forcing, and hard attention's sampling."""

from __future__ import annotations

import pytest
import torch

from attnkit.models import beam_search, greedy
from attnkit.models.captioner import (
    CaptionerConfig,
    ShowAttendTell,
    doubly_stochastic_penalty,
    grid_shape,
)


def tiny(attention: str = "soft", **kw) -> ShowAttendTell:
    config = CaptionerConfig(
        vocab_size=9, attention=attention, channels=8, position_dim=4, feature_dim=12,
        embed_dim=6, hidden_dim=10, attention_dim=7, dropout=0.0, **kw,
    )
    return ShowAttendTell(config).eval()


def images(widths: list[int], height: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    batch = torch.zeros(len(widths), height, max(widths))
    for i, w in enumerate(widths):
        batch[i, :, :w] = torch.rand(height, w)
    return batch, torch.tensor(widths)


def test_doubly_stochastic_penalty_follows_the_formula() -> None:
    alphas = torch.rand(3, 4, 5)
    steps = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    cells = torch.tensor([[1] * 5, [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    expected = []
    for b in range(3):  # λ Σ_i (1 − Σ_t α_ti)² over real steps t and real cells i, λ = 1
        total = 0.0
        for i in range(5):
            if cells[b, i]:
                total += (1 - sum(float(alphas[b, t, i]) for t in range(4) if steps[b, t])) ** 2
        expected.append(total)
    got = doubly_stochastic_penalty(alphas, steps, cells)
    torch.testing.assert_close(got, torch.tensor(expected))
    with pytest.raises(ValueError, match="alphas must be"):
        doubly_stochastic_penalty(alphas, steps[:, :2], cells)


def test_the_grid_is_column_major_and_padding_cells_get_no_attention() -> None:
    model = tiny()
    pixels, widths = images([13, 24])
    memory, lengths = model.encode(pixels, widths)
    rows, cols = grid_shape(10, 24)
    assert (rows, cols) == (3, 6) and memory.shape == (2, 18, 12)
    assert lengths.tolist() == [4 * 3, 6 * 3]  # ⌈13/4⌉ columns of 3 cells
    tgt_in = torch.tensor([[1, 4, 5], [1, 6, 0]])
    _, alphas = model.forward_with_attention(pixels, widths, tgt_in)  # (B, T, S)
    torch.testing.assert_close(alphas.sum(-1), torch.ones(2, 3))
    assert alphas[0, :, 12:].abs().max() == 0
    grids = model.alignments(pixels, widths, tgt_in)  # (B, T, rows, cols)
    assert grids.shape == (2, 3, 3, 6)
    torch.testing.assert_close(grids[1, 0, :, 1], alphas[1, 0, 3:6])  # column 1 = cells 3..5
    assert grids[0, :, :, 4:].abs().max() == 0


def test_an_image_gets_the_same_logits_alone_and_in_a_padded_batch() -> None:
    model = tiny()
    pixels, widths = images([13, 29, 7])
    tgt_in = torch.tensor([[1, 4, 5]] * 3)
    together = model(pixels, widths, tgt_in)
    for i, w in enumerate(widths.tolist()):
        alone = model(pixels[i : i + 1, :, :w], widths[i : i + 1], tgt_in[i : i + 1])
        torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_incremental_decoding_equals_teacher_forcing() -> None:
    torch.manual_seed(1)
    model = tiny()
    pixels, widths = images([16, 9, 21])
    decoded = greedy(model, pixels, widths, max_len=6)
    for i, tokens in enumerate(decoded.tokens):
        tgt_in = torch.tensor([[1, *tokens]])
        logits = model(pixels[i : i + 1], widths[i : i + 1], tgt_in)[0]  # (T, V)
        expected = [*tokens, 2] if len(tokens) < 6 else tokens
        assert logits.argmax(-1).tolist()[: len(expected)] == expected
        log_p = torch.log_softmax(logits, -1)
        total = sum(float(log_p[t, y]) for t, y in enumerate(expected))
        assert decoded.scores[i] == pytest.approx(total, abs=1e-4)
    beams = beam_search(model, pixels, widths, beam_size=1, max_len=6, length_penalty_alpha=0)
    assert beams.tokens == decoded.tokens


def test_hard_attention_samples_one_cell_in_training_and_takes_the_argmax_in_eval() -> None:
    model = tiny("hard").train()
    pixels, widths = images([12, 20])
    tgt_in = torch.tensor([[1, 4, 5], [1, 6, 7]])
    _, alphas = model.forward_with_attention(pixels, widths, tgt_in)
    assert ((alphas == 0) | (alphas == 1)).all() and alphas.sum(-1).eq(1).all()
    assert alphas[0, :, 9:].sum() == 0  # never a padding cell (⌈12/4⌉ · 3 = 9 real cells)
    loss = model.attention.reinforce_loss(torch.tensor([-1.0, -2.0]))
    loss.backward()
    assert model.attention.scorer.v.grad is not None
    assert model.attention.scorer.v.grad.abs().sum() > 0
    model.eval()
    probs_model = tiny("hard")
    probs_model.load_state_dict(model.state_dict())
    _, hard = probs_model.forward_with_attention(pixels, widths, tgt_in)
    state = probs_model.start(pixels, widths)
    soft = probs_model.attention.probabilities(state.h, state.memory, key_lengths=state.lengths)
    assert torch.equal(hard[:, 0].argmax(-1), soft.argmax(-1))


def test_hard_attention_can_attend_with_the_expectation_under_the_same_scores() -> None:
    model = tiny("hard").train()
    pixels, widths = images([12, 20])
    tgt_in = torch.tensor([[1, 4, 5], [1, 6, 7]])
    _, alphas = model.forward_with_attention(pixels, widths, tgt_in, expected=True)
    assert not model.attention._log_probs  # nothing sampled
    torch.testing.assert_close(alphas.sum(-1), torch.ones(2, 3))
    assert alphas.max() < 1
    state = model.start(pixels, widths)
    soft = model.attention.probabilities(state.h, state.memory, key_lengths=state.lengths)
    torch.testing.assert_close(alphas[:, 0], soft)
    assert model.expected_attention.scorer is model.attention.scorer
    assert set(model.state_dict()) >= {"attention.scorer.v", "expected_attention.scorer.v"}


def test_bad_inputs_are_named() -> None:
    model = tiny()
    pixels, widths = images([8, 8])
    with pytest.raises(TypeError, match="images must be a floating tensor"):
        model.encode(pixels.long(), widths)
    with pytest.raises(ValueError, match=r"images must be \(B, H, W\)"):
        model.encode(pixels[:, None], widths)
    with pytest.raises(ValueError, match=r"widths must lie in 1\.\.8"):
        model.encode(pixels, torch.tensor([8, 9]))
    with pytest.raises(TypeError, match="widths must be an integer tensor"):
        model.encode(pixels, widths.float())
    with pytest.raises(ValueError, match="tgt_in must be"):
        model(pixels, widths, torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="attention must be one of"):
        CaptionerConfig(vocab_size=5, attention="glance")
    with pytest.raises(ValueError, match="position_dim must be even"):
        CaptionerConfig(vocab_size=5, position_dim=3)
