"""RNN encoder–decoders: without attention ("RNNenc", Cho et al. 2014) and with it ("RNNsearch",
Bahdanau et al. 2015; and Luong et al. 2015's global/local variants).

- Encoder: embeddings and a bidirectional GRU/LSTM; the annotations ``h_j = [→h_j; ←h_j]``.
- ``attention=None`` (RNNenc): the decoder sees only ``c = tanh(V [→h_S; ←h_1])``, at every step.
- ``"bahdanau"`` (and ``"hard"``): the query is the *previous* state, ``c_i`` enters the RNN:
  ``s_i = f(s_{i-1}, y_{i-1}, c_i)``; output from ``(s_i, y_{i-1}, c_i)``.
- ``"luong-*"``, ``"local-m"``, ``"local-p"``: the query is the *current* state ``h_t``;
  ``h̃_t = tanh(W_c [c_t; h_t])`` gives the output and is fed to the next step (input feeding).

Shape legend: B batch, S source length, T target length, E embedding, H hidden, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnkit.layers import AdditiveAttention, HardAttention, LuongAttention
from attnkit.layers.single import SingleHeadAttention
from attnkit.models.seq2seq import DecodingState, Seq2Seq, Special, check_source

#: attention name -> which decoder state is the query: the "previous" or the "current" one
ATTENTIONS = {
    "bahdanau": "previous",
    "hard": "previous",
    "luong-dot": "current",
    "luong-general": "current",
    "luong-concat": "current",
    "local-m": "current",
    "local-p": "current",
}


def make_attention(name: str, hidden: int, window: int) -> SingleHeadAttention:
    """The attnkit layer for ``name`` (see :data:`ATTENTIONS`), queries and keys of size H."""
    if name == "bahdanau":
        return AdditiveAttention(hidden, hidden, hidden)
    if name == "hard":
        return HardAttention(hidden, hidden, score="additive", estimator="gumbel", tau=1.0)
    if name.startswith("luong-"):
        return LuongAttention(hidden, score=name.removeprefix("luong-"))
    if name in ("local-m", "local-p"):
        return LuongAttention(hidden, score="general", mode=name, window=window)
    raise ValueError(f"attention must be None or one of {sorted(ATTENTIONS)}, got {name!r}")


@dataclass
class RNNConfig:
    """An RNN encoder–decoder. ``attention=None`` is RNNenc; a name from :data:`ATTENTIONS`
    is RNNsearch with that attention."""

    src_vocab: int
    tgt_vocab: int
    embed_dim: int = 128
    hidden_dim: int = 256
    encoder_layers: int = 1
    cell: str = "gru"
    attention: str | None = "bahdanau"
    window: int = 4
    dropout: float = 0.1
    special: dict[str, int] = field(default_factory=lambda: Special().__dict__.copy())

    def __post_init__(self) -> None:
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {self.cell!r}")
        if self.attention is not None and self.attention not in ATTENTIONS:
            raise ValueError(
                f"attention must be None or one of {sorted(ATTENTIONS)}, got {self.attention!r}"
            )
        if self.hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (two directions), got {self.hidden_dim}")


class RNNState(DecodingState):
    def __init__(self, memory: Tensor, lengths: Tensor, hidden: tuple[Tensor, ...], feed: Tensor):
        self.memory, self.lengths, self.hidden, self.feed = memory, lengths, hidden, feed
        self.t = 0
        self.attention = None

    def reorder(self, index: Tensor) -> None:
        self.memory = self.memory.index_select(0, index)
        self.lengths = self.lengths.index_select(0, index)
        self.hidden = tuple(h.index_select(0, index) for h in self.hidden)
        self.feed = self.feed.index_select(0, index)
        if self.attention is not None:
            self.attention = self.attention.index_select(0, index)


class RNNSeq2Seq(Seq2Seq):
    """RNNenc / RNNsearch. See the module docstring for the equations."""

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = config
        self.special = Special(**config.special)
        h, e = config.hidden_dim, config.embed_dim
        rnn = nn.GRU if config.cell == "gru" else nn.LSTM
        cell = nn.GRUCell if config.cell == "gru" else nn.LSTMCell
        self.src_embed = nn.Embedding(config.src_vocab, e, padding_idx=self.special.pad)
        self.tgt_embed = nn.Embedding(config.tgt_vocab, e, padding_idx=self.special.pad)
        self.encoder = rnn(
            e,
            h // 2,
            num_layers=config.encoder_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.encoder_layers > 1 else 0.0,
        )
        self.init_state = nn.Linear(h, h)  # s_0 = tanh(W [→h_S; ←h_1])
        self.attention = (
            make_attention(config.attention, h, config.window) if config.attention else None
        )
        self.style = ATTENTIONS.get(config.attention or "", "none")
        # RNNenc and "previous": input [E y; c]; "current": input feeding [E y; h̃]
        self.cell = cell(e + h, h)
        self.combine = nn.Linear(2 * h, h, bias=False)  # W_c [c_t; h_t] (current style)
        self.readout = nn.Linear(h + e + h, h)  # from (s_i, y_{i-1}, c_i)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(h, config.tgt_vocab)

    # -- encoder --------------------------------------------------------------------------------

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(memory (B, S, H), summary (B, H))``: the annotations and ``[→h_S; ←h_1]``."""
        check_source(src, src_lengths)
        embedded = self.dropout(self.src_embed(src))  # (B, S, E)
        packed = pack_padded_sequence(
            embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.shape[1])
        last = final[0] if isinstance(final, tuple) else final  # (layers·2, B, H/2)
        summary = torch.cat([last[-2], last[-1]], dim=-1)  # (B, H): forward end, backward start
        return memory, summary

    def start(self, src: Tensor, src_lengths: Tensor) -> RNNState:
        memory, summary = self.encode(src, src_lengths)
        s0 = torch.tanh(self.init_state(summary))  # (B, H)
        hidden = (s0,) if self.config.cell == "gru" else (s0, torch.zeros_like(s0))
        # RNNenc feeds the fixed summary c; "current" feeds h̃ (zero at the start)
        feed = s0 if self.attention is None else torch.zeros_like(s0)
        return RNNState(memory, src_lengths, hidden, feed)

    # -- decoder --------------------------------------------------------------------------------

    def step(self, state: RNNState, tokens: Tensor) -> tuple[Tensor, RNNState]:
        y = self.dropout(self.tgt_embed(tokens))  # (B, E)
        s_prev = state.hidden[0]
        if self.style == "previous":
            context, state.attention = self._attend(s_prev, state)  # query s_{i-1}
            state.hidden = self._cell(torch.cat([y, context], dim=-1), state.hidden)
            s = state.hidden[0]
            features = torch.tanh(self.readout(torch.cat([s, y, context], dim=-1)))
        elif self.style == "current":
            state.hidden = self._cell(torch.cat([y, state.feed], dim=-1), state.hidden)
            h_t = state.hidden[0]
            context, state.attention = self._attend(h_t, state)  # query h_t
            features = torch.tanh(self.combine(torch.cat([context, h_t], dim=-1)))  # h̃_t
            state.feed = features
        else:  # RNNenc: the summary c is the only link to the source
            context = state.feed
            state.hidden = self._cell(torch.cat([y, context], dim=-1), state.hidden)
            s = state.hidden[0]
            features = torch.tanh(self.readout(torch.cat([s, y, context], dim=-1)))
        state.t += 1
        return self.output(self.dropout(features)), state  # (B, V)

    def _attend(self, query: Tensor, state: RNNState) -> tuple[Tensor, Tensor]:
        assert self.attention is not None
        extra = {"positions": state.t} if self.config.attention == "local-m" else {}
        return self.attention(query, state.memory, key_lengths=state.lengths, **extra)

    def _cell(self, x: Tensor, hidden: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        out = self.cell(x, hidden[0] if len(hidden) == 1 else hidden)
        return out if isinstance(out, tuple) else (out,)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        state = self.start(src, src_lengths)
        logits = []
        for t in range(tgt_in.shape[1]):
            step_logits, state = self.step(state, tgt_in[:, t])
            logits.append(step_logits)
        return torch.stack(logits, dim=1)  # (B, T, V)

    def alignments(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced cross-attention ``(B, T, S)`` (zeros for RNNenc)."""
        state = self.start(src, src_lengths)
        rows = []
        for t in range(tgt_in.shape[1]):
            _, state = self.step(state, tgt_in[:, t])
            a = state.attention
            rows.append(a if a is not None else src.new_zeros(src.shape, dtype=torch.float32))
        return torch.stack(rows, dim=1)
