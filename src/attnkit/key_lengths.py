"""Key padding as lengths (and starts): the structured form of a padding mask, which the kernels
read as a fact of the call's visibility instead of a dense ``(B, 1, Lq, Lk)`` mask.

Shape legend: B batch, S (or Lk) keys.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit import masks


class KeyLengths:
    """Key padding given as lengths: key ``j`` of batch item ``b`` is real when
    ``starts[b] ≤ j < lengths[b]``.

    Pass it as ``mask=KeyLengths(lengths)``; kernels can then skip padded blocks instead of
    reading a dense mask. ``lengths (B,)`` integer: right padding. ``starts (B,)`` integer
    (default all 0): left padding, the first real key of each item (a left-padded batch has
    ``lengths`` = ``Lk`` and ``starts`` = the number of pad tokens).

    Alignment (where ``causal`` and ``window`` place each query): by default ``"padded"``,
    query ``i`` sits at key position ``Lk − Lq + i`` of the padded batch, as without lengths.
    With ``align="end"`` each sequence aligns on its own, as flash-attention's variable-length
    API does: query ``i`` of sequence ``b`` sits at key position ``lengths[b] − Lq_b + i``,
    where ``Lq_b = query_lengths[b]`` (``(B,)`` integer, each ``≤ Lq``; query rows from
    ``Lq_b`` on are padding and see nothing) or ``Lq`` without them. Giving ``query_lengths``
    implies ``align="end"``.

    Raises:
        TypeError, ValueError: lengths that are not 1-D integer tensors of one size, an unknown
            ``align``, ``query_lengths`` with ``align="padded"``, or negative ``starts``.
    """

    def __init__(
        self, lengths: Tensor, *, starts: Tensor | None = None,
        query_lengths: Tensor | None = None, align: str | None = None,
    ) -> None:
        self.lengths = self._check("lengths", lengths)
        self.starts = self.query_lengths = None
        if starts is not None:
            self.starts = self._same_size("starts", starts)
            if not torch.compiler.is_compiling() and bool((self.starts < 0).any()):
                raise ValueError(f"KeyLengths: starts must be ≥ 0, got {self.starts.tolist()}")
        if query_lengths is not None:
            self.query_lengths = self._same_size("query_lengths", query_lengths)
        if align not in (None, "padded", "end"):
            raise ValueError(f"KeyLengths: align must be 'padded' or 'end', got {align!r}")
        if align == "padded" and query_lengths is not None:
            raise ValueError("KeyLengths: query_lengths align each sequence on its own: "
                             "use align='end' (or leave align out)")
        self.align = align or ("end" if query_lengths is not None else "padded")

    @classmethod
    def from_mask(cls, real: Tensor) -> KeyLengths | None:
        """The key lengths (and starts) of a bool ``real (B, S)`` (True = real key) whose real
        keys are one run per item, ``starts[b] ≤ j < lengths[b]`` (right and/or left
        padding; an item with no real key is an empty run); ``None`` when they are not (a pad
        between real keys). Reads the values: not for ``torch.compile``/``torch.export``.

        Raises:
            ValueError: ``real`` is not 2-D.
        """
        if real.dim() != 2:
            raise ValueError(f"KeyLengths.from_mask: real must be (B, S), got {tuple(real.shape)}")
        real = real.bool()
        count = real.sum(dim=-1)  # (B,)
        starts = torch.where(count > 0, real.int().argmax(dim=-1), 0)  # (B,): first real key
        index = torch.arange(real.shape[-1], device=real.device)  # (S,)
        run = (index >= starts.unsqueeze(-1)) & (index < (starts + count).unsqueeze(-1))  # (B, S)
        if not torch.equal(run, real):
            return None
        return cls(starts + count, starts=starts if bool(starts.any()) else None)

    def as_mask(self, kv_len: int) -> Tensor:
        """The real keys as a bool ``(B, 1, 1, kv_len)`` mask (True = may attend)."""
        return masks.key_padding(self.lengths, kv_len, self.starts)

    @staticmethod
    def _check(name: str, lengths: object) -> Tensor:
        if not isinstance(lengths, Tensor):
            raise TypeError(f"KeyLengths: {name} must be a tensor, got {type(lengths).__name__}")
        if lengths.dim() != 1 or lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(
                f"KeyLengths: {name} must be a 1-D integer tensor (B,), got shape "
                f"{tuple(lengths.shape)} dtype {lengths.dtype}"
            )
        return lengths.long()

    def _same_size(self, name: str, given: object) -> Tensor:
        checked = self._check(name, given)
        if checked.shape != self.lengths.shape:
            raise ValueError(
                f"KeyLengths: {name} {tuple(checked.shape)} and lengths "
                f"{tuple(self.lengths.shape)} must have one entry per batch item each"
            )
        return checked

    def __repr__(self) -> str:
        extra = ""
        if self.starts is not None:
            extra += f", starts={self.starts.tolist()}"
        if self.query_lengths is not None:
            extra += f", query_lengths={self.query_lengths.tolist()}"
        align = "" if self.align == "padded" else f", align={self.align!r}"
        return f"KeyLengths({self.lengths.tolist()}{extra}{align})"
