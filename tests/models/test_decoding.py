"""Decoders: beam 1 is greedy, the KV cache gives the full pass, top-k 1 sampling is greedy."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from attnkit.layers import CachePolicy
from attnkit.models import (
    ATTENTIONS,
    RNNConfig,
    RNNSeq2Seq,
    Seq2SeqTransformer,
    TransformerConfig,
    beam_search,
    greedy,
    sample,
)
from attnkit.models.decoding import filter_logits


def batch():
    src = torch.randint(3, 20, (3, 7))
    lengths = torch.tensor([7, 5, 3])
    tgt = torch.randint(3, 15, (3, 6))
    tgt[:, 0] = 1  # <bos>
    return src, lengths, tgt


def transformer(positions: str = "sinusoidal", **kw) -> Seq2SeqTransformer:
    config = TransformerConfig(
        20,
        15,
        width=32,
        heads=4,
        ff_dim=64,
        encoder_layers=2,
        decoder_layers=2,
        positions=positions,
        **kw,
    )
    return Seq2SeqTransformer(config).eval()


def models():
    yield (
        "rnnenc",
        RNNSeq2Seq(RNNConfig(20, 15, embed_dim=16, hidden_dim=32, attention=None)).eval(),
    )
    for name in ATTENTIONS:
        yield (
            name,
            RNNSeq2Seq(RNNConfig(20, 15, embed_dim=16, hidden_dim=32, attention=name)).eval(),
        )
    yield "lstm", RNNSeq2Seq(RNNConfig(20, 15, embed_dim=16, hidden_dim=32, cell="lstm")).eval()
    for positions in ("sinusoidal", "learned", "rope", "alibi"):
        yield positions, transformer(positions)
    yield "post-norm-gqa", transformer(norm_first=False, kv_heads=2)


@pytest.mark.parametrize(
    "name,model", list(models()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_incremental_steps_equal_teacher_forcing_and_beam1_equals_greedy(name, model) -> None:
    src, lengths, tgt = batch()
    with torch.no_grad():
        full = model(src, lengths, tgt)  # (B, T, V)
        state = model.start(src, lengths)
        steps = []
        for t in range(tgt.shape[1]):
            logits, state = model.step(state, tgt[:, t])
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-4, rtol=1e-4)
    g = greedy(model, src, lengths, max_len=9)
    b = beam_search(model, src, lengths, beam_size=1, length_penalty_alpha=0.0, max_len=9)
    assert g.tokens == b.tokens
    s = sample(model, src, lengths, top_k=1, max_len=9, generator=torch.Generator().manual_seed(0))
    assert s.tokens == g.tokens


def sequence_log_prob(model, src, lengths, tokens: list[int], eos: int) -> float:
    tgt = torch.tensor([[1, *tokens]])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(src, lengths, tgt), -1)[0]
    wanted = [*tokens, eos]
    return float(sum(log_probs[t, token] for t, token in enumerate(wanted)))


def test_beam_search_scores_are_real_log_probabilities_and_beat_greedy() -> None:
    torch.manual_seed(3)
    model = transformer()
    src, lengths, _ = batch()
    src, lengths = src[:1], lengths[:1]
    g = greedy(model, src, lengths, max_len=6)
    b = beam_search(model, src, lengths, beam_size=5, length_penalty_alpha=0.0, max_len=6)
    finished = len(b.tokens[0]) < 6
    if finished:  # the returned score is log p(Y, <eos>) recomputed by a teacher-forced pass
        assert b.scores[0] == pytest.approx(
            sequence_log_prob(model, src, lengths, b.tokens[0], model.special.eos), abs=1e-4
        )
    if len(g.tokens[0]) < 6 and finished:
        assert b.scores[0] >= g.scores[0] - 1e-5


def test_filter_logits_top_k_and_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = filter_logits(logits, top_p=0.7)[0]  # 0.5 < 0.7 <= 0.5 + 0.3: keep two tokens
    assert torch.isfinite(kept[:2]).all() and torch.isinf(kept[2:]).all()
    assert math.isfinite(float(filter_logits(logits, top_p=1.0)[0, 3]))


def test_decoder_arguments_are_checked() -> None:
    model = transformer()
    src, lengths, _ = batch()
    with pytest.raises(ValueError, match="beam_size must be a positive integer, got 0"):
        beam_search(model, src, lengths, beam_size=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample(model, src, lengths, temperature=0)
    with pytest.raises(ValueError, match=r"src_lengths must lie in 1..7, got \[7, 5, 9\]"):
        greedy(model, src, torch.tensor([7, 5, 9]))
    with pytest.raises(ValueError, match=r"attention must be None or one of"):
        RNNConfig(5, 5, attention="bahdanu")


@pytest.mark.parametrize("positions", ["sinusoidal", "rope", "alibi"])
@pytest.mark.parametrize("policy", ["window", "sinks", "h2o"])
def test_transformer_decoders_take_a_cache_policy(positions: str, policy: str) -> None:
    """A bounded cache that holds the whole output decodes as the unbounded one (beam search
    reorders it too; h2o's attention totals may come from another kernel than sdpa, hence the
    tolerance on the scores); a small one evicts and keeps its size."""
    torch.manual_seed(0)
    model = transformer(positions, dropout=0.0)
    src, lengths, _ = batch()
    roomy = CachePolicy(max_len=12, policy=policy, sinks=2)
    for decode, options in ((greedy, {}), (beam_search, {"beam_size": 2})):
        got = decode(model, src, lengths, max_len=12, cache=roomy, **options)
        expected = decode(model, src, lengths, max_len=12, **options)
        assert got.tokens == expected.tokens
        assert got.scores == pytest.approx(expected.scores, rel=1e-5)
    state = model.start(src, lengths, cache=CachePolicy(max_len=3, policy=policy, sinks=1))
    with torch.no_grad():
        for _ in range(6):
            model.step(state, torch.full((3,), 4))
    assert all(len(self_cache) == 3 for self_cache, _ in state.caches)


def test_a_cache_policy_for_a_model_without_cache_is_refused() -> None:
    model = RNNSeq2Seq(RNNConfig(20, 15, embed_dim=16, hidden_dim=32)).eval()
    src, lengths, _ = batch()
    with pytest.raises(ValueError, match="keeps no KV cache"):
        greedy(model, src, lengths, cache=CachePolicy(max_len=4, policy="window"))


def _repeats_an_ngram(sequence: list[int], n: int) -> bool:
    grams = [tuple(sequence[i : i + n]) for i in range(len(sequence) - n + 1)]
    return len(grams) != len(set(grams))


def test_repeated_ngram_tokens_match_a_brute_force_search() -> None:
    from attnkit.models.decoding import repeated_ngram_tokens

    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        history = torch.randint(0, 4, (int(torch.randint(0, 9, (1,), generator=g)),),
                                generator=g).tolist()
        for n in (1, 2, 3):
            want = {t for t in range(4) if _repeats_an_ngram([*history, t], n)
                    and not _repeats_an_ngram(history, n)}
            if not _repeats_an_ngram(history, n):
                assert set(repeated_ngram_tokens(history, n)) == want, (history, n)
    assert repeated_ngram_tokens([5, 6, 5], 0) == []


@pytest.mark.parametrize("beam", [1, 3])
def test_no_repeats_decoding_never_repeats_an_ngram_or_a_token_twice_in_a_row(beam: int) -> None:
    from attnkit.models.decoding import no_repeats

    torch.manual_seed(0)
    model = RNNSeq2Seq(RNNConfig(20, 6, embed_dim=8, hidden_dim=16)).eval()  # 6 words: repeats
    with torch.no_grad():
        model.output.bias[model.special.eos] = -20.0  # it never stops on its own
    src, lengths, _ = batch()
    decode = greedy if beam == 1 else lambda *a, **k: beam_search(*a, beam_size=beam, **k)
    free = decode(model, src, lengths, max_len=30).tokens
    assert any(_repeats_an_ngram(seq, 2) for seq in free)  # the untrained model repeats itself
    blocked = decode(model, src, lengths, max_len=30, banned=no_repeats(2)).tokens
    assert not any(_repeats_an_ngram(seq, 2) for seq in blocked)
    assert not any(a == b for seq in blocked for a, b in pairwise(seq))
    with pytest.raises(ValueError, match="positive integer"):
        no_repeats(0)
