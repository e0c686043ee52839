"""The pointer-generator network with coverage (See et al. 2017, "Get To The Point").

- Encoder: shared word embeddings and a bidirectional LSTM; ``h_i = [→h_i; ←h_i]`` (size H).
- Decoder: an LSTM cell fed ``[x_t; h*_{t-1}]`` (the previous word's embedding and context);
  its state ``s_t`` attends over ``h`` with coverage
  (:class:`~attnkit.layers.coverage.CoverageAttention`):
  ``e_i^t = vᵀ tanh(W_h h_i + W_s s_t + w_c c_i^t + b)``, ``a^t = softmax(e^t)``,
  ``h*_t = Σ_i a_i^t h_i``, ``c^{t+1} = c^t + a^t``.
- Output: ``P_vocab = softmax(V'(V [s_t; h*_t] + b) + b')``,
  ``p_gen = σ(w_hᵀ h*_t + w_sᵀ s_t + w_xᵀ x_t + b_ptr)`` and
  ``P(w) = p_gen P_vocab(w) + (1 − p_gen) Σ_{i : w_i = w} a_i^t`` over the *extended*
  vocabulary: the source ids ``src`` may be ``≥ V`` for words outside the vocabulary
  (see :func:`attnkit.data.documents.extend_source`); such a word can be produced only by
  copying. ``copy=False`` is the same network without the pointer (``P = P_vocab``).
- Coverage loss (:func:`coverage_loss`): ``Σ_i min(a_i^t, c_i^t)`` per step.

It implements :class:`~attnkit.models.Seq2Seq`, so greedy, beam search and sampling decode it.
``forward`` and ``step`` return ``log P(w)`` as the "logits" (``log_softmax`` of them is
themselves, so every decoder and ``sequence_cross_entropy`` work unchanged); an id ``≥ V``
fed back to the decoder is read as ``<unk>``.

Shape legend: B batch, S source length, T target length, E embedding, H hidden, V vocabulary,
X extended vocabulary (V + the batch's most source-only words).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnkit._validate import check_positive_fields
from attnkit.layers.coverage import CoverageAttention
from attnkit.models.seq2seq import DecodingState, Seq2Seq, Special, check_source

_TINY = 1e-12  # log P is taken of P clamped here: never -inf, never NaN


@dataclass
class PointerGeneratorConfig:
    """Shape of a :class:`PointerGenerator`. ``vocab``: V, shared by source and target."""

    vocab: int
    embed_dim: int = 128
    hidden_dim: int = 256
    attention_dim: int | None = None  # A; default H
    copy: bool = True
    coverage: bool = True
    dropout: float = 0.1
    unk: int = 3
    attention_backend: str = "auto"  # the kernel of the coverage attention (see attnkit.kernels)
    special: dict[str, int] = field(default_factory=lambda: Special().__dict__.copy())

    def __post_init__(self) -> None:
        check_positive_fields(self, ("vocab", "embed_dim", "hidden_dim"))
        if self.hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (two directions), got {self.hidden_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.unk < self.vocab:
            raise ValueError(f"unk id {self.unk} outside the vocabulary [0, {self.vocab})")


class PointerGeneratorState(DecodingState):
    """Encoder memory, the extended source ids, the LSTM state, the last context and the
    coverage, for a batch of hypotheses."""

    def __init__(
        self,
        memory: Tensor,
        lengths: Tensor,
        src_ext: Tensor,
        width: int,
        hidden: tuple[Tensor, Tensor],
        context: Tensor,
        coverage: Tensor,
    ) -> None:
        self.memory, self.lengths, self.src_ext = memory, lengths, src_ext  # (B,S,H) (B,) (B,S)
        self.width = width  # X, the extended vocabulary of this batch
        self.hidden, self.context, self.coverage = hidden, context, coverage  # (B,H) (B,H) (B,S)
        self.attention: Tensor | None = None  # a^t (B, S) of the last step

    def reorder(self, index: Tensor) -> None:
        pick = lambda t: t.index_select(0, index)  # noqa: E731
        self.memory, self.lengths, self.src_ext = map(
            pick, (self.memory, self.lengths, self.src_ext)
        )
        self.hidden = (pick(self.hidden[0]), pick(self.hidden[1]))
        self.context, self.coverage = pick(self.context), pick(self.coverage)
        if self.attention is not None:
            self.attention = pick(self.attention)


@dataclass
class Details:
    """A teacher-forced pass: ``log_probs (B, T, X)``, ``attention (B, T, S)`` (a^t),
    ``coverage (B, T, S)`` (c^t, before step t's attention) and ``p_gen (B, T)``."""

    log_probs: Tensor
    attention: Tensor
    coverage: Tensor
    p_gen: Tensor


class PointerGenerator(Seq2Seq):
    """See the module docstring. ``PointerGenerator(PointerGeneratorConfig(vocab=V))``."""

    def __init__(self, config: PointerGeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.special = Special(**config.special)
        e, h = config.embed_dim, config.hidden_dim
        self.embed = nn.Embedding(config.vocab, e, padding_idx=self.special.pad)
        self.encoder = nn.LSTM(e, h // 2, batch_first=True, bidirectional=True)
        self.reduce_h = nn.Linear(h, h)  # s_0 from [→h_S; ←h_1] (ReLU, as See et al.)
        self.reduce_c = nn.Linear(h, h)
        self.cell = nn.LSTMCell(e + h, h)
        self.attention = CoverageAttention(
            h, h, config.attention_dim or h, backend=config.attention_backend
        )
        self.project = nn.Linear(2 * h, h)  # V [s_t; h*_t] + b
        self.output = nn.Linear(h, config.vocab)  # V' (.) + b'
        self.pointer = nn.Linear(h + h + e, 1) if config.copy else None  # w_h*, w_s, w_x, b_ptr
        self.dropout = nn.Dropout(config.dropout)

    # -- encoder ------------------------------------------------------------------------------

    def _vocab_ids(self, ids: Tensor) -> Tensor:
        """Extended ids with the source-only ones (``≥ V``) read as ``<unk>``."""
        return ids.masked_fill(ids >= self.config.vocab, self.config.unk)

    def start(self, src: Tensor, src_lengths: Tensor) -> PointerGeneratorState:
        check_source(src, src_lengths)
        embedded = self.dropout(self.embed(self._vocab_ids(src)))  # (B, S, E)
        packed = pack_padded_sequence(
            embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, (h_n, c_n) = self.encoder(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.shape[1])
        h0 = torch.relu(self.reduce_h(torch.cat([h_n[0], h_n[1]], dim=-1)))  # (B, H)
        c0 = torch.relu(self.reduce_c(torch.cat([c_n[0], c_n[1]], dim=-1)))  # (B, H)
        extra = max(0, int(src.max()) + 1 - self.config.vocab) if src.numel() else 0
        width = self.config.vocab + (extra if self.config.copy else 0)
        b, s = src.shape
        return PointerGeneratorState(
            memory,
            src_lengths,
            src,
            width,
            (h0, c0),
            memory.new_zeros(b, memory.shape[-1]),
            memory.new_zeros(b, s),
        )

    # -- decoder ------------------------------------------------------------------------------

    def step(
        self, state: PointerGeneratorState, tokens: Tensor
    ) -> tuple[Tensor, PointerGeneratorState]:
        """Feed ``tokens (B,)`` (extended ids); return ``log P(w) (B, X)`` and the state."""
        return self._advance(state, tokens)[0], state

    def _advance(
        self, state: PointerGeneratorState, tokens: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One decoder step: ``(log P(w) (B, X), a^t (B, S), c^t (B, S), p_gen (B,))``."""
        x = self.dropout(self.embed(self._vocab_ids(tokens)))  # (B, E)
        h, c = self.cell(torch.cat([x, state.context], dim=-1), state.hidden)  # (B, H) each
        coverage = state.coverage if self.config.coverage else torch.zeros_like(state.coverage)
        context, a = self.attention(h, state.memory, coverage, key_lengths=state.lengths)
        state.coverage = state.coverage + a  # c^{t+1} = c^t + a^t
        state.hidden, state.context, state.attention = (h, c), context, a
        features = self.dropout(self.project(torch.cat([h, context], dim=-1)))  # (B, H)
        p_vocab = torch.softmax(self.output(features).float(), dim=-1)  # (B, V)
        if self.pointer is None:
            p_gen = torch.ones_like(p_vocab[:, 0])  # (B,)
            return torch.log(p_vocab.clamp_min(_TINY)), a, coverage, p_gen
        gate = torch.sigmoid(self.pointer(torch.cat([context, h, x], dim=-1))).float()  # (B, 1)
        extended = p_vocab.new_zeros(p_vocab.shape[0], state.width)  # (B, X)
        extended[:, : self.config.vocab] = gate * p_vocab
        copy = ((1.0 - gate) * a.float()).masked_fill(state.src_ext == self.special.pad, 0.0)
        extended = extended.scatter_add(1, state.src_ext, copy)  # Σ_{i: w_i = w} a_i^t
        return torch.log(extended.clamp_min(_TINY)), a, coverage, gate.squeeze(-1)

    def details(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Details:
        """Teacher forcing, with the attention, coverage and ``p_gen`` of every step."""
        state = self.start(src, src_lengths)
        rows = [self._advance(state, tgt_in[:, t]) for t in range(tgt_in.shape[1])]
        log_probs, attention, coverage, p_gen = (
            torch.stack(r, dim=1) for r in zip(*rows, strict=False)
        )
        return Details(log_probs, attention, coverage, p_gen)  # (B,T,X) (B,T,S) (B,T,S) (B,T)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """``log P(w) (B, T, X)`` for the next word at every target position."""
        return self.details(src, src_lengths, tgt_in).log_probs


def coverage_loss(attention: Tensor, coverage: Tensor, steps: Tensor | None = None) -> Tensor:
    """See et al.'s coverage loss ``Σ_i min(a_i^t, c_i^t)``, averaged over the counted steps.

    Args:
        attention: ``a (B, T, S)``.
        coverage: ``c (B, T, S)``, the coverage each step was scored with.
        steps: bool ``(B, T)``, True at real target steps (default: all).

    Returns:
        A scalar; 0 when no step is counted.

    Raises:
        ValueError: shapes that do not match.
    """
    if attention.shape != coverage.shape or attention.dim() != 3:
        raise ValueError(
            f"attention and coverage must both be (B, T, S), got {tuple(attention.shape)} and "
            f"{tuple(coverage.shape)}"
        )
    per_step = torch.minimum(attention, coverage).sum(dim=-1)  # (B, T)
    if steps is None:
        return per_step.mean()
    if steps.shape != per_step.shape:
        raise ValueError(
            f"steps must be (B, T) = {tuple(per_step.shape)}, got {tuple(steps.shape)}"
        )
    count = steps.sum()
    return (per_step * steps).sum() / count.clamp_min(1)
