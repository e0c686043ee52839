"""Image captioning with attention: "Show, Attend and Tell" (Xu et al. 2015).

- Encoder: a small CNN (two blocks of two 3×3 convolutions with batch norm and ReLU, and a
  2×2 max-pool; activations right of an image's true width are zeroed) turns a
  grayscale image ``(H, W)`` into a grid of ``rows × cols`` cells (``rows = ⌈H/4⌉``,
  ``cols = ⌈W/4⌉``); each cell's CNN features, concatenated with sinusoidal encodings of its
  row and column (:func:`attnkit.positions.sinusoidal`), are projected to an annotation
  vector ``a_i`` of size D. The grid is flattened **column-major** (all rows of column 0, then
  column 1, ...), so the real cells of a right-padded image are a prefix of length
  ``⌈width/4⌉ · rows``, which is what :func:`attnkit.attention`'s key lengths mask.
- Decoder: an LSTM started from ``h_0 = tanh(W_h ā)``, ``c_0 = tanh(W_c ā)`` (ā the mean
  annotation). At step t the attention reads the previous state: ``α_t = attention(h_{t-1}, a)``;
  the context is gated, ``ẑ_t = σ(w_β h_{t-1}) · Σ_i α_ti a_i``; the LSTM reads
  ``[E y_{t-1}; ẑ_t]``; the deep output is ``p(y_t) ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z ẑ_t))``.
- ``attention="soft"``: additive attention (:class:`attnkit.layers.AdditiveAttention`), trained
  by backpropagation with the doubly stochastic regularisation of
  :func:`doubly_stochastic_penalty`. ``attention="hard"``: one sampled cell per step
  (:class:`attnkit.layers.HardAttention` with REINFORCE; the task calls its
  ``reinforce_loss``); the argmax cell at inference. A teacher-forced pass may instead use
  the *expected* context ``Σ_i α_ti a_i`` under the same score parameters
  (``forward_with_attention(..., expected=True)``): Xu et al. do so for half of the batches.

The model implements :class:`~attnkit.models.seq2seq.Seq2Seq` with the image as the source
(``src = images (B, H, W)``, ``src_lengths = widths (B,)``), so :func:`attnkit.models.greedy`
and :func:`attnkit.models.beam_search` decode it. (Their ``Decoded.attention`` slices the
source by ``src_lengths``, which here are pixel widths: use :meth:`ShowAttendTell.alignments`
for the attention over the grid.)

Shape legend: B batch, H/W image height/width, S = rows·cols grid cells, D annotation size,
T caption steps, V vocabulary, E embedding, Hd LSTM state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnkit.layers import AdditiveAttention, HardAttention, SingleHeadAttention
from attnkit.models.seq2seq import DecodingState, Seq2Seq, Special
from attnkit.positions import sinusoidal

ATTENTION_KINDS = ("soft", "hard")
STRIDE = 4  # pixels per grid cell along each axis (two 2×2 pools)


@dataclass
class CaptionerConfig:
    """A Show-Attend-Tell captioner (:class:`ShowAttendTell`).

    Attributes:
        vocab_size: V, caption tokens (special ids included).
        attention: ``"soft"`` or ``"hard"``.
        channels: CNN channels of the second block (the first has half).
        position_dim: size of each of the row and column encodings (even).
        feature_dim: D, the annotation size.
        embed_dim, hidden_dim, attention_dim: E, Hd and the width of the additive score.
        dropout: on embeddings and the deep output.
        entropy_weight, baseline_decay: REINFORCE's entropy bonus and moving-average baseline
            (hard attention).
        backend: the :func:`attnkit.attention` kernel of the attention layer (``"auto"``, or a
            registered kernel such as ``"reference"``).

    Raises:
        ValueError: an unknown attention, a non-positive size, an odd ``position_dim``.
    """

    vocab_size: int
    attention: str = "soft"
    channels: int = 64
    position_dim: int = 16
    feature_dim: int = 128
    embed_dim: int = 64
    hidden_dim: int = 256
    attention_dim: int = 128
    dropout: float = 0.1
    entropy_weight: float = 0.01
    baseline_decay: float = 0.9
    backend: str = "auto"
    special: dict[str, int] = field(default_factory=lambda: Special().__dict__.copy())

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(
                f"attention must be one of {list(ATTENTION_KINDS)}, got {self.attention!r}"
            )
        for name in ("vocab_size", "channels", "position_dim", "feature_dim", "embed_dim",
                     "hidden_dim", "attention_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.position_dim % 2:
            raise ValueError(f"position_dim must be even, got {self.position_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """``(rows, cols)`` of the annotation grid of an ``(height, width)`` image."""
    return -(-height // STRIDE), -(-width // STRIDE)


def grid_lengths(widths: Tensor, height: int) -> Tensor:
    """Real grid cells per image ``(B,)``: ``⌈width/4⌉ · rows`` (column-major prefix)."""
    rows = grid_shape(height, 1)[0]
    return (widths + STRIDE - 1).div(STRIDE, rounding_mode="floor") * rows


def doubly_stochastic_penalty(alphas: Tensor, step_mask: Tensor, cell_mask: Tensor) -> Tensor:
    """Xu et al. 2015's ``Σ_i (1 − Σ_t α_ti)²`` per example (multiply by λ yourself).

    Args:
        alphas: ``(B, T, S)`` attention weights.
        step_mask: ``(B, T)`` bool, True at real caption steps (padding steps do not count).
        cell_mask: ``(B, S)`` bool, True at real grid cells (padding cells do not count).

    Returns:
        ``(B,)`` the penalty of each example.

    Raises:
        ValueError: shapes that do not fit.
    """
    if alphas.dim() != 3 or step_mask.shape != alphas.shape[:2] or cell_mask.shape != (
        alphas.shape[0], alphas.shape[2]
    ):
        raise ValueError(
            f"alphas must be (B, T, S), step_mask (B, T) and cell_mask (B, S); got "
            f"{tuple(alphas.shape)}, {tuple(step_mask.shape)}, {tuple(cell_mask.shape)}"
        )
    total = (alphas * step_mask.unsqueeze(-1).to(alphas.dtype)).sum(dim=1)  # (B, S)
    return ((1.0 - total) ** 2 * cell_mask.to(alphas.dtype)).sum(dim=-1)  # (B,)


class CaptionState(DecodingState):
    """Decoding state: the annotations, their lengths, the LSTM state."""

    def __init__(self, memory: Tensor, lengths: Tensor, h: Tensor, c: Tensor, *,
                 expected: bool = False) -> None:
        self.memory, self.lengths, self.h, self.c = memory, lengths, h, c
        self.expected = expected  # hard attention: attend softly (the expectation) instead
        self.attention = None

    def reorder(self, index: Tensor) -> None:
        self.memory = self.memory.index_select(0, index)
        self.lengths = self.lengths.index_select(0, index)
        self.h, self.c = self.h.index_select(0, index), self.c.index_select(0, index)
        if self.attention is not None:
            self.attention = self.attention.index_select(0, index)


class GridEncoder(nn.Module):
    """CNN + positions: ``images (B, H, W)``, ``widths (B,)`` -> annotations ``(B, S, D)``
    (column-major). Activations right of each image's true width are zeroed after every
    layer, so an image gets the same annotations alone as in a right-padded batch."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        c1, c2 = max(1, config.channels // 2), config.channels
        sizes = [(1, c1), (c1, c1), (c1, c2), (c2, c2)]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in sizes)
        self.norms = nn.ModuleList(nn.BatchNorm2d(b) for _, b in sizes)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.position_dim = config.position_dim
        self.project = nn.Linear(c2 + 2 * config.position_dim, config.feature_dim)

    def forward(self, images: Tensor, widths: Tensor) -> Tensor:
        x = images.unsqueeze(1)  # (B, 1, H, W)
        scale = 1
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = torch.relu(norm(conv(x)))  # (B, C, H / scale, W / scale)
            real = torch.arange(x.shape[-1], device=x.device) < -(-widths[:, None] // scale)
            x = x * real[:, None, None, :].to(x.dtype)  # zero right of the true width
            if i % 2 == 1:
                x = self.pool(x)
                scale *= 2
        b, _, rows, cols = x.shape  # (B, C, rows, cols)
        p = self.position_dim
        row_code = sinusoidal(rows, p, base=100.0, device=images.device)  # (rows, P)
        col_code = sinusoidal(cols, p, base=100.0, device=images.device)  # (cols, P)
        grid = x.permute(0, 3, 2, 1)  # (B, cols, rows, C): column-major
        codes = torch.cat([
            col_code[:, None, :].expand(cols, rows, p),
            row_code[None, :, :].expand(cols, rows, p),
        ], dim=-1).to(grid.dtype)  # (cols, rows, 2P)
        grid = torch.cat([grid, codes.expand(b, cols, rows, 2 * p)], dim=-1)
        return self.project(grid.reshape(b, cols * rows, -1))  # (B, S, D)


class ShowAttendTell(Seq2Seq):
    """Show, Attend and Tell with soft or hard attention (see the module doc)."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.special = Special(**config.special)
        d, e, hd = config.feature_dim, config.embed_dim, config.hidden_dim
        self.encoder = GridEncoder(config)
        self.init_h, self.init_c = nn.Linear(d, hd), nn.Linear(d, hd)
        if config.attention == "soft":
            self.attention: AdditiveAttention | HardAttention = AdditiveAttention(
                hd, d, config.attention_dim, backend=config.backend
            )
        else:
            self.attention = HardAttention(
                hd, d, score="additive", hidden_dim=config.attention_dim, estimator="reinforce",
                entropy_weight=config.entropy_weight, baseline_decay=config.baseline_decay,
                backend=config.backend,
            )
            # soft attention under the same score parameters: the expected context
            self.expected_attention = SingleHeadAttention(self.attention.scorer,
                                                          backend=config.backend)
        self.gate = nn.Linear(hd, 1)  # β = σ(w_β h_{t-1})
        self.embed = nn.Embedding(config.vocab_size, e, padding_idx=self.special.pad)
        self.cell = nn.LSTMCell(e + d, hd)
        self.out_h = nn.Linear(hd, e)  # L_h
        self.out_z = nn.Linear(d, e)  # L_z
        self.output = nn.Linear(e, config.vocab_size)  # L_o
        self.dropout = nn.Dropout(config.dropout)

    # -- encoder ------------------------------------------------------------------------------

    def encode(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        """``(annotations (B, S, D), cell lengths (B,))`` of ``images (B, H, W)``.

        Raises:
            TypeError: ``images`` not floating point or ``widths`` not integer.
            ValueError: ``images`` not ``(B, H, W)``; ``widths`` not ``(B,)`` in ``1..W``.
        """
        _check_images(images, widths)
        memory = self.encoder(images, widths)  # (B, S, D)
        return memory, grid_lengths(widths, images.shape[1]).to(memory.device)

    def start(self, images: Tensor, widths: Tensor) -> CaptionState:  # type: ignore[override]
        memory, lengths = self.encode(images, widths)
        real = (torch.arange(memory.shape[1], device=memory.device) < lengths[:, None])  # (B, S)
        mean = (memory * real.unsqueeze(-1)).sum(1) / lengths[:, None].to(memory.dtype)  # (B, D)
        return CaptionState(memory, lengths, torch.tanh(self.init_h(mean)),
                            torch.tanh(self.init_c(mean)))

    # -- decoder ------------------------------------------------------------------------------

    def step(self, state: CaptionState, tokens: Tensor  # type: ignore[override]
             ) -> tuple[Tensor, CaptionState]:
        y = self.dropout(self.embed(tokens))  # (B, E)
        attend = self.expected_attention if state.expected else self.attention
        context, state.attention = attend(state.h, state.memory,
                                          key_lengths=state.lengths)  # (B, D), (B, S)
        z = torch.sigmoid(self.gate(state.h)) * context  # (B, D)
        state.h, state.c = self.cell(torch.cat([y, z], dim=-1), (state.h, state.c))
        logits = self.output(self.dropout(y + self.out_h(state.h) + self.out_z(z)))  # (B, V)
        return logits, state

    def forward_with_attention(self, images: Tensor, widths: Tensor, tgt_in: Tensor, *,
                               expected: bool = False) -> tuple[Tensor, Tensor]:
        """Teacher forcing: ``(logits (B, T, V), alphas (B, T, S))``.

        ``expected=True`` (hard attention only): attend with the expected context, drawing
        no samples.

        Raises:
            ValueError: see :meth:`encode`; ``tgt_in`` not ``(B, T)`` integer ids.
        """
        if tgt_in.dim() != 2 or tgt_in.is_floating_point() or tgt_in.shape[0] != images.shape[0]:
            raise ValueError(f"tgt_in must be (B, T) = ({images.shape[0]}, T) token ids, got "
                             f"{tgt_in.dtype} {tuple(tgt_in.shape)}")
        state = self.start(images, widths)
        state.expected = expected and self.config.attention == "hard"
        logits, alphas = [], []
        for t in range(tgt_in.shape[1]):
            step_logits, state = self.step(state, tgt_in[:, t])
            logits.append(step_logits)
            alphas.append(state.attention)
        return torch.stack(logits, dim=1), torch.stack(alphas, dim=1)  # (B, T, V), (B, T, S)

    def forward(self, images: Tensor, widths: Tensor, tgt_in: Tensor  # type: ignore[override]
                ) -> Tensor:
        """Teacher forcing: ``images (B, H, W)``, ``widths (B,)``, ``tgt_in (B, T)`` ->
        logits ``(B, T, V)``."""
        return self.forward_with_attention(images, widths, tgt_in)[0]

    @torch.no_grad()
    def alignments(self, images: Tensor, widths: Tensor, tgt_in: Tensor) -> Tensor:
        """Where each step looked, as grids: ``(B, T, rows, cols)`` (padding cells are 0)."""
        was_training = self.training
        self.eval()
        try:
            _, alphas = self.forward_with_attention(images, widths, tgt_in)  # (B, T, S)
        finally:
            self.train(was_training)
        rows, cols = grid_shape(images.shape[1], images.shape[2])
        b, t, _ = alphas.shape
        return alphas.reshape(b, t, cols, rows).transpose(-1, -2)  # (B, T, rows, cols)


def _check_images(images: Tensor, widths: Tensor) -> None:
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise TypeError(f"images must be a floating tensor (B, H, W), got "
                        f"{getattr(images, 'dtype', type(images).__name__)}")
    if images.dim() != 3 or 0 in images.shape:
        raise ValueError(f"images must be (B, H, W) grayscale, got shape {tuple(images.shape)}")
    if not isinstance(widths, Tensor) or widths.is_floating_point():
        raise TypeError(f"widths must be an integer tensor (B,), got "
                        f"{getattr(widths, 'dtype', type(widths).__name__)}")
    if widths.shape != (images.shape[0],):
        raise ValueError(f"widths must be (B,) = ({images.shape[0]},), got {tuple(widths.shape)}")
    if int(widths.min()) < 1 or int(widths.max()) > images.shape[2]:
        raise ValueError(f"widths must lie in 1..{images.shape[2]} (the padded width), got "
                         f"{widths.tolist()}")
