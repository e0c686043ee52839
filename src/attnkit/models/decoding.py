"""Decoding for any :class:`~attnkit.models.seq2seq.Seq2Seq`: greedy, beam search, sampling.

All three are incremental: the source is encoded once and each step feeds one token (the
Transformer then attends through its KV cache, bounded as ``cache=CachePolicy(...)`` says).
Outputs exclude ``<bos>`` and ``<eos>``.

Shape legend: B batch, K beam size, S source length, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import torch
from torch import Tensor

from attnkit.layers import CachePolicy
from attnkit.models.seq2seq import DecodingState, Seq2Seq
from attnkit.models.transformer import Seq2SeqTransformer


@dataclass
class Decoded:
    """Token ids per batch item, their log-probabilities (length-normalised for beams), and
    for greedy decoding each item's cross-attention ``(T, S)`` when the model exposes it."""

    tokens: list[list[int]]
    scores: list[float]
    attention: list[Tensor] | None = None


def _check(max_len: int) -> None:
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive integer, got {max_len!r}")


def _start(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, cache: CachePolicy | None
) -> DecodingState:
    """``model.start``, with the KV-cache policy for the models that have a cache.

    Raises:
        ValueError: a ``cache`` policy for a model without a KV cache.
    """
    if cache is None:
        return model.start(src, src_lengths)
    if not isinstance(model, Seq2SeqTransformer):
        raise ValueError(f"cache: {type(model).__name__} keeps no KV cache (the Transformer does)")
    return model.start(src, src_lengths, cache=cache)


def repeated_ngram_tokens(history: list[int], n: int) -> list[int]:
    """The tokens that would make ``history`` repeat one of its own ``n``-grams (none when
    ``n`` is 0): after ``a b`` with ``n = 3``, every ``c`` that followed an earlier ``a b``.
    Decoders leave them out ("no repeat n-gram", as in Paulus et al. 2018 and Hugging Face's
    ``no_repeat_ngram_size``)."""
    if n <= 0 or len(history) < n - 1:
        return []
    prefix = history[len(history) - n + 1 :] if n > 1 else []
    return [
        history[i + n - 1]
        for i in range(len(history) - n + 1)
        if history[i : i + n - 1] == prefix
    ]


Banned = Callable[[list[int]], list[int]]  # a hypothesis's tokens -> those it may not take next


def no_repeats(n: int) -> Banned:
    """A ``banned`` rule for the decoders: never the token just written (no word twice in a
    row) nor one that would repeat an ``n``-gram of the hypothesis.

    Raises:
        ValueError: ``n`` < 1.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")

    def banned(history: list[int]) -> list[int]:
        return [*history[-1:], *repeated_ngram_tokens(history, n)]

    return banned


@torch.no_grad()
def greedy(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    *,
    max_len: int = 100,
    cache: CachePolicy | None = None,
    banned: Banned | None = None,
) -> Decoded:
    """Pick the most probable token at every step until ``<eos>`` or ``max_len``, never one
    that ``banned(output so far)`` lists (e.g. :func:`no_repeats`)."""
    _check(max_len)
    special = model.special
    state = _start(model, src, src_lengths, cache)
    b = src.shape[0]
    tokens = torch.full((b,), special.bos, dtype=torch.long, device=src.device)
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    out: list[list[int]] = [[] for _ in range(b)]
    scores = torch.zeros(b, device=src.device)
    rows: list[Tensor] = []
    for _ in range(max_len):
        logits, state = model.step(state, tokens)  # (B, V)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        for i in range(b) if banned is not None else ():
            log_probs[i, banned(out[i])] = float("-inf")
        tokens = log_probs.argmax(dim=-1)  # (B,)
        scores += torch.where(done, 0.0, log_probs.gather(1, tokens[:, None]).squeeze(1))
        if state.attention is not None:
            rows.append(state.attention)
        for i in (~done & (tokens != special.eos)).nonzero().flatten().tolist():
            out[i].append(int(tokens[i]))
        done |= tokens == special.eos
        if bool(done.all()):
            break
    attention = None
    if rows:
        stacked = torch.stack(rows, dim=1)  # (B, T, S)
        attention = [stacked[i, : len(out[i]) + 1, : int(src_lengths[i])] for i in range(b)]
    return Decoded(out, scores.tolist(), attention)


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's ``((5 + |Y|) / 6)^α`` (Wu et al. 2016); ``α = 0`` is no normalisation."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    *,
    beam_size: int = 4,
    length_penalty_alpha: float = 0.6,
    max_len: int = 100,
    cache: CachePolicy | None = None,
    banned: Banned | None = None,
) -> Decoded:
    """Keep the ``beam_size`` best partial translations; return each item's best finished one by
    ``log p(Y) / length_penalty(|Y|)``. No hypothesis takes a token ``banned(hypothesis)``
    lists (e.g. :func:`no_repeats`).

    A hypothesis ends when an ``<eos>`` ranks among the ``beam_size`` best candidates; an item
    stops when no running hypothesis can still beat its best finished one. With
    ``length_penalty_alpha=0`` and ``beam_size=1`` this is exactly greedy decoding (with
    ``α > 0`` one beam may search on for a better length-normalised ending).

    Raises:
        ValueError: ``beam_size`` < 1 or a bad ``max_len``.
    """
    _check(max_len)
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive integer, got {beam_size!r}")
    special, b, k = model.special, src.shape[0], beam_size
    device = src.device
    state = _start(model, src, src_lengths, cache)
    state.reorder(torch.arange(b, device=device).repeat_interleave(k))  # (B·K) rows
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    sequences: list[list[list[int]]] = [[[] for _ in range(k)] for _ in range(b)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    tokens = torch.full((b * k,), special.bos, dtype=torch.long, device=device)
    done = [False] * b
    for t in range(max_len):
        logits, state = model.step(state, tokens)  # (B·K, V)
        vocab = logits.shape[-1]
        candidates = scores.unsqueeze(-1) + torch.log_softmax(logits.float(), -1).view(b, k, vocab)
        for i, j in product(range(b), range(k)) if banned is not None else ():
            candidates[i, j, banned(sequences[i][j])] = float("-inf")
        top_scores, top_index = candidates.view(b, k * vocab).topk(2 * k, dim=-1)  # (B, 2K)
        parents = torch.zeros(b, k, dtype=torch.long)
        next_tokens = torch.full((b, k), special.eos, dtype=torch.long)
        next_scores = torch.full((b, k), float("-inf"))
        next_sequences: list[list[list[int]]] = []
        for i in range(b):
            kept: list[list[int]] = []
            pairs = zip(top_scores[i].tolist(), top_index[i].tolist(), strict=True)
            for rank, (score, index) in enumerate(pairs):
                if done[i] or score == float("-inf") or len(kept) == k:
                    break
                parent, token = divmod(index, vocab)
                if token == special.eos:
                    if rank < k:  # only an <eos> among the k best candidates ends a hypothesis
                        finished[i].append((score, sequences[i][parent]))
                    continue
                parents[i, len(kept)] = parent
                next_tokens[i, len(kept)] = token
                next_scores[i, len(kept)] = score
                kept.append([*sequences[i][parent], token])
            kept += [[] for _ in range(k - len(kept))]
            # Done when no running hypothesis can still beat the best finished one (extending
            # only lowers its log-probability; the heuristic of Hugging Face's beam search).
            best_finished = max(
                (s / length_penalty(len(q) + 1, length_penalty_alpha) for s, q in finished[i]),
                default=float("-inf"),
            )
            best_running = float(next_scores[i].max()) / length_penalty(t + 2, length_penalty_alpha)
            if done[i] or (finished[i] and best_finished >= best_running):
                done[i] = True
                next_scores[i] = float("-inf")
            next_sequences.append(kept)
        sequences, scores = next_sequences, next_scores.to(device)
        if all(done) or t == max_len - 1:
            break
        flat_parents = (torch.arange(b).unsqueeze(-1) * k + parents).flatten().to(device)
        state.reorder(flat_parents)
        tokens = next_tokens.flatten().to(device)
    best_tokens, best_scores = [], []
    for i in range(b):
        pool = finished[i] + [
            (float(scores[i, j]), sequences[i][j])
            for j in range(k)
            if scores[i, j] > float("-inf") and not done[i]
        ]
        if not pool:
            pool = [(float("-inf"), [])]
        score, seq = max(
            pool, key=lambda item: item[0] / length_penalty(len(item[1]) + 1, length_penalty_alpha)
        )
        best_tokens.append(seq)
        best_scores.append(score / length_penalty(len(seq) + 1, length_penalty_alpha))
    return Decoded(best_tokens, best_scores)


@torch.no_grad()
def sample(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    max_len: int = 100,
    generator: torch.Generator | None = None,
    cache: CachePolicy | None = None,
) -> Decoded:
    """Draw each token from ``softmax(logits / temperature)``, restricted to the ``top_k`` most
    probable tokens and/or the smallest set whose probability reaches ``top_p`` (nucleus).

    Raises:
        ValueError: ``temperature`` ≤ 0, ``top_k`` < 1, ``top_p`` outside (0, 1].
    """
    _check(max_len)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be ≥ 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    special = model.special
    state = _start(model, src, src_lengths, cache)
    b = src.shape[0]
    tokens = torch.full((b,), special.bos, dtype=torch.long, device=src.device)
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    out: list[list[int]] = [[] for _ in range(b)]
    scores = torch.zeros(b, device=src.device)
    for _ in range(max_len):
        logits, state = model.step(state, tokens)
        log_probs = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
        log_probs = torch.log_softmax(log_probs, dim=-1)  # (B, V)
        tokens = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(1)
        scores += torch.where(done, 0.0, log_probs.gather(1, tokens[:, None]).squeeze(1))
        for i in (~done & (tokens != special.eos)).nonzero().flatten().tolist():
            out[i].append(int(tokens[i]))
        done |= tokens == special.eos
        if bool(done.all()):
            break
    return Decoded(out, scores.tolist())


def filter_logits(
    logits: Tensor, *, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """Set to ``-inf`` the logits outside the top-k and outside the top-p nucleus: ``(B, V)``."""
    if top_k is not None and top_k < logits.shape[-1]:
        threshold = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        outside = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the first over
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits
