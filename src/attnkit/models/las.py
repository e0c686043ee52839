"""Listen, Attend and Spell (Chan et al. 2016) with location-aware attention (Chorowski et al.
2015): speech features in, characters out.

- **Listener**: a pyramidal bidirectional LSTM. Each of its ``listener_layers`` layers
  concatenates pairs of consecutive frames of the layer below (the features, for the first)
  and runs a BiLSTM over them, halving the time resolution: ``T`` frames become
  ``ceil(T / 2^layers)`` encoder states ``h_j`` (an odd frame count is padded with one zero
  frame).
- **Speller**: an LSTM over characters. At step ``i`` the location-aware attention takes the
  previous state ``s_{i-1}`` and the previous alignment ``α_{i-1}``: ``f_i = F * α_{i-1}``,
  ``e_ij = wᵀ tanh(W s_{i-1} + V h_j + U f_ij + b)``, ``α_i = softmax(e_i)``,
  ``c_i = Σ_j α_ij h_j``; then ``s_i = LSTM([E y_{i-1}; c_i], s_{i-1})`` and
  ``p(y_i) = softmax(W_o tanh(W_r [s_i; c_i]))``. ``α_0`` is uniform over the real frames.

The model implements :class:`~attnkit.models.seq2seq.Seq2Seq` (``src`` = features), so
:func:`attnkit.models.greedy` and :func:`attnkit.models.beam_search` decode it.

Shape legend: B batch, T feature frames, F feature size, S encoder states (T / 2^layers),
L characters, E embedding, H listener width, D speller width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnkit.layers.location_aware import LocationAwareAttention
from attnkit.models.seq2seq import DecodingState, Seq2Seq, Special, padding_mask


@dataclass
class LASConfig:
    """A Listen, Attend and Spell model.

    Attributes:
        input_dim: F, the feature size (mel channels).
        vocab: V, characters including the special tokens.
        listener_dim: H, the listener's output width (H / 2 per direction); must be even.
        listener_layers: pyramid layers; time shrinks by ``2 ** listener_layers``.
        speller_dim: D, the speller LSTM's width.
        embed_dim: E, the character embedding size.
        attention_dim: A, the width of the attention's ``tanh``.
        location_channels, location_kernel: C filters of width K (odd) over ``α_{i-1}``.
        dropout: between listener layers and before the output layer.

    Raises:
        ValueError: a size < 1, an odd ``listener_dim``, an even ``location_kernel``, or
            ``dropout`` outside [0, 1).
    """

    input_dim: int
    vocab: int
    listener_dim: int = 256
    listener_layers: int = 3
    speller_dim: int = 256
    embed_dim: int = 64
    attention_dim: int = 128
    location_channels: int = 10
    location_kernel: int = 15
    dropout: float = 0.1
    special: dict[str, int] = field(default_factory=lambda: Special().__dict__.copy())

    def __post_init__(self) -> None:
        for name in ("input_dim", "vocab", "listener_dim", "listener_layers", "speller_dim",
                     "embed_dim", "attention_dim", "location_channels", "location_kernel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LASConfig.{name} must be a positive integer, got {value!r}")
        if self.listener_dim % 2:
            raise ValueError(f"listener_dim must be even (two directions), got {self.listener_dim}")
        if self.location_kernel % 2 == 0:
            raise ValueError(f"location_kernel must be odd, got {self.location_kernel}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class PyramidalListener(nn.Module):
    """The pyramidal BiLSTM encoder (Chan et al. 2016); see the module docstring.

    Each direction is its own LSTM over the padded batch; the backward one reads every
    utterance reversed *within its length* (:func:`reverse_padded`), so padding never enters
    a real state. (Packed sequences give the same result, but their backward pass on CPU
    zero-fills a full-size gradient at every time step.)
    """

    def __init__(self, input_dim: int, width: int, layers: int, dropout: float) -> None:
        super().__init__()
        sizes = [input_dim] + [width] * (layers - 1)
        self.forward_lstms = nn.ModuleList(
            nn.LSTM(2 * size, width // 2, batch_first=True) for size in sizes
        )
        self.backward_lstms = nn.ModuleList(
            nn.LSTM(2 * size, width // 2, batch_first=True) for size in sizes
        )
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def output_lengths(lengths: Tensor, layers: int) -> Tensor:
        """Encoder states per utterance: ``ceil(T / 2)`` applied ``layers`` times."""
        for _ in range(layers):
            lengths = (lengths + 1) // 2
        return lengths

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``features (B, T, F)``, ``lengths (B,)`` -> ``(states (B, S, H), lengths (B,))``;
        states past an utterance's length are zero."""
        x = features
        layers = zip(self.forward_lstms, self.backward_lstms, strict=True)
        for i, (forward_lstm, backward_lstm) in enumerate(layers):
            x = x * padding_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # zero padding
            if x.shape[1] % 2:
                x = nn.functional.pad(x, (0, 0, 0, 1))  # (B, T + 1, F): one zero frame
            b, t, f = x.shape
            x = x.reshape(b, t // 2, 2 * f)  # (B, T/2, 2F): consecutive pairs side by side
            lengths = (lengths + 1) // 2
            ahead, _ = forward_lstm(x)  # (B, T/2, H/2)
            back, _ = backward_lstm(reverse_padded(x, lengths))  # (B, T/2, H/2), reversed
            x = torch.cat([ahead, reverse_padded(back, lengths)], dim=-1)  # (B, T/2, H)
            if i < len(self.forward_lstms) - 1:
                x = self.dropout(x)
        return x * padding_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype), lengths


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row of ``x (B, T, F)`` within its first ``lengths[b]`` steps; padding stays
    in place. Its own inverse."""
    t = x.shape[1]
    steps = torch.arange(t, device=x.device).unsqueeze(0)  # (1, T)
    last = (lengths.to(x.device) - 1).unsqueeze(1)  # (B, 1)
    index = torch.where(steps <= last, last - steps, steps)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # (B, T, F)


class LASState(DecodingState):
    """The speller's state for a batch of hypotheses."""

    def __init__(
        self, memory: Tensor, keys: Tensor, lengths: Tensor, hidden: tuple[Tensor, Tensor],
        previous: Tensor,
    ) -> None:
        self.memory = memory  # (B, S, H) encoder states h_j
        self.keys = keys  # (B, S, A) V h_j, projected once
        self.lengths = lengths  # (B,)
        self.hidden = hidden  # (B, D) twice: s and the LSTM cell
        self.previous = previous  # (B, S) α_{i-1}
        self.attention: Tensor | None = None

    def reorder(self, index: Tensor) -> None:
        self.memory = self.memory.index_select(0, index)
        self.keys = self.keys.index_select(0, index)
        self.lengths = self.lengths.index_select(0, index)
        self.hidden = (self.hidden[0].index_select(0, index), self.hidden[1].index_select(0, index))
        self.previous = self.previous.index_select(0, index)
        if self.attention is not None:
            self.attention = self.attention.index_select(0, index)


class LAS(Seq2Seq):
    """Listen, Attend and Spell with location-aware attention; see the module docstring."""

    def __init__(self, config: LASConfig) -> None:
        super().__init__()
        self.config = config
        self.special = Special(**config.special)
        c = config
        self.listener = PyramidalListener(c.input_dim, c.listener_dim, c.listener_layers,
                                          c.dropout)
        self.attention = LocationAwareAttention(
            c.speller_dim, c.listener_dim, c.attention_dim, channels=c.location_channels,
            kernel_size=c.location_kernel,
        )
        self.embed = nn.Embedding(c.vocab, c.embed_dim, padding_idx=self.special.pad)
        self.cell = nn.LSTMCell(c.embed_dim + c.listener_dim, c.speller_dim)
        self.readout = nn.Linear(c.speller_dim + c.listener_dim, c.speller_dim)
        self.dropout = nn.Dropout(c.dropout)
        self.output = nn.Linear(c.speller_dim, c.vocab)

    def _check(self, src: Tensor, src_lengths: Tensor) -> None:
        if src.dim() != 3 or not src.is_floating_point() or src.shape[-1] != self.config.input_dim:
            raise ValueError(
                f"src must be float features (B, T, {self.config.input_dim}), got {src.dtype} "
                f"{tuple(src.shape)}"
            )
        if src_lengths.shape != (src.shape[0],) or src_lengths.is_floating_point():
            raise ValueError(
                f"src_lengths must be integer (B,) = ({src.shape[0]},), got "
                f"{src_lengths.dtype} {tuple(src_lengths.shape)}"
            )
        if src.shape[1] == 0 or src_lengths.min() < 1 or src_lengths.max() > src.shape[1]:
            raise ValueError(
                f"src_lengths must lie in 1..{src.shape[1]}, got {src_lengths.tolist()}"
            )

    def listen(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(states (B, S, H), lengths (B,))`` of the pyramidal listener."""
        self._check(src, src_lengths)
        return self.listener(src, src_lengths)

    def start(self, src: Tensor, src_lengths: Tensor) -> LASState:
        memory, lengths = self.listen(src, src_lengths)
        b, s, _ = memory.shape
        real = padding_mask(lengths, s).to(memory.dtype)  # (B, S)
        previous = real / lengths.unsqueeze(-1).to(memory.dtype)  # (B, S) α_0: uniform
        zeros = memory.new_zeros(b, self.config.speller_dim)
        keys = self.attention.project_keys(memory)  # (B, S, A)
        return LASState(memory, keys, lengths, (zeros, zeros.clone()), previous)

    def step(self, state: LASState, tokens: Tensor) -> tuple[Tensor, LASState]:
        y = self.embed(tokens)  # (B, E)
        context, alpha = self.attention(
            state.hidden[0], state.memory, state.previous, key_lengths=state.lengths,
            projected_keys=state.keys,
        )  # (B, H), (B, S): the query is s_{i-1}
        state.previous = state.attention = alpha
        state.hidden = self.cell(torch.cat([y, context], dim=-1), state.hidden)  # s_i
        features = torch.tanh(self.readout(torch.cat([state.hidden[0], context], dim=-1)))
        return self.output(self.dropout(features)), state  # (B, V)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: ``src (B, T, F)``, ``src_lengths (B,)``, ``tgt_in (B, L)`` starting
        with ``<bos>`` -> logits ``(B, L, V)``."""
        return self.teacher_forced(src, src_lengths, tgt_in)[0]

    def teacher_forced(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(logits (B, L, V), alignments (B, L, S))`` reading ``tgt_in``."""
        if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0] or tgt_in.is_floating_point():
            raise ValueError(
                f"tgt_in must be integer ids (B, L) with B = {src.shape[0]}, got "
                f"{tgt_in.dtype} {tuple(tgt_in.shape)}"
            )
        state = self.start(src, src_lengths)
        logits, alignments = [], []
        for t in range(tgt_in.shape[1]):
            step_logits, state = self.step(state, tgt_in[:, t])
            logits.append(step_logits)
            alignments.append(state.previous)
        return torch.stack(logits, dim=1), torch.stack(alignments, dim=1)
