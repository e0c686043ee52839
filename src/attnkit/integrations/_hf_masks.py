"""The masks of attnkit's ``transformers`` backend: the function registered in
``AttentionMaskInterface`` and the :class:`AttnkitMask` it returns.

transformers builds the mask of a forward pass (one per kind of layer) by calling the function
registered for the model's ``attn_implementation`` with a description of it: sizes, position
offsets, the 2-D padding mask and a ``mask_function(b, h, q_idx, kv_idx)`` composed from the
factories in ``transformers.masking_utils`` (causal, bidirectional, sliding-window overlays,
joined by ``and_masks``). The attention function then receives what that function returned.

:func:`build_mask` returns the mask in the form attnkit's kernels take: a band of key − query
offsets (``causal=True``, ``window=``) and the padding as key starts and lengths
(:class:`attnkit.KeyLengths`: left padding, as batched generation has it, and right padding),
so no ``(B, 1, Lq, Lk)`` tensor is made. It recognises the mask function only when it is
exactly one of those factories' functions (same code object; a window size is read from the
closure), and only where both sides place queries alike (below). Anything else (padding with
holes, packed sequences, chunked attention, overlays of image tokens, a user's own function, a
static cache) becomes the dense boolean mask that transformers' own ``sdpa_mask`` builds from
the same description: always correct, only slower.

Positions: transformers puts query ``i`` at ``q_offset + i`` and key ``j`` at ``kv_offset + j``;
attnkit aligns queries bottom-right, query ``i`` at key index ``Lk − Lq + i``. The two agree
when ``q_offset + Lq == kv_offset + Lk``: no cache, a dynamic cache, a sliding-window cache.
Where they do not (cross-attention, a static cache) only a band that bounds nothing (padding
alone) stays structured.

The sliding window: ``sliding_window_overlay(W)`` keeps keys ``kv_idx > q_idx − W``, so with the
causal mask a query sees ``W`` keys, itself and the ``W − 1`` before it: ``window=(W − 1, 0)``.
The bidirectional overlay keeps ``|q_idx − kv_idx| ≤ W``: ``window=(W, W)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import masking_utils as hf_masks

import attnkit

# (left, right): a query at position p sees keys p − left .. p + right; None = unbounded.
Band = tuple[int | None, int | None]

_AND_CODE = hf_masks.and_masks(hf_masks.causal_mask_function).__code__
_SLIDING_CODE = hf_masks.sliding_window_overlay(1).__code__
_SLIDING_BIDIRECTIONAL_CODE = hf_masks.sliding_window_bidirectional_overlay(1).__code__


@dataclass(frozen=True, eq=False)
class AttnkitMask:
    """The mask of one kind of layer for one forward pass, as attnkit takes it.

    Either structured (``band`` and the ``padding`` of the keys) or ``dense``: bool
    ``(B, 1, Lq, Lk)``, True = may attend. ``aligned`` says whether queries sit bottom-right
    of the keys, as attnkit's ``causal`` and ``window`` place them (needed to add a window on
    top).
    """

    q_len: int
    kv_len: int
    band: Band = (None, None)
    padding: attnkit.KeyLengths | None = None  # left and/or right padding
    dense: Tensor | None = None  # (B, 1, Lq, Lk) bool
    aligned: bool = True

    def arguments(self, extra_window: tuple[int, int] | None = None) -> dict[str, Any]:
        """``mask``, ``causal`` and ``window`` for :func:`attnkit.attention`, with
        ``extra_window`` (left, right) intersected with the mask's own band."""
        band = self.band
        if extra_window is not None:
            band = _intersect(band, extra_window)
        causal, window = _attnkit_band(band, self.q_len, self.kv_len)
        mask = self.dense if self.dense is not None else self.padding
        return {"mask": mask, "causal": causal, "window": window}


def build_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int | Tensor = 0,
    kv_offset: int | Tensor = 0,
    mask_function: Callable[..., Any] = hf_masks.causal_mask_function,
    attention_mask: Tensor | None = None,
    local_size: int | None = None,
    use_vmap: bool = False,
    device: torch.device | str = "cpu",
    **_how_to_materialise: Any,
) -> AttnkitMask:
    """The ``AttentionMaskInterface`` function of the ``"attnkit"`` backend.

    Takes what transformers gives ``sdpa_mask`` (``attention_mask`` is the 2-D padding mask
    ``(B, ≥ kv_offset + Lk)``, True = real token). The remaining keywords (``dtype``,
    ``allow_is_causal_skip``, ``config``, ...) only say how sdpa or eager would materialise
    the mask; attnkit does not materialise it.
    """
    q_offset, kv_offset = int(q_offset), int(kv_offset)  # a static cache gives 0-d tensors
    aligned = q_offset + q_length == kv_offset + kv_length
    band = band_of(mask_function)
    if band is not None and (aligned or band == (None, None)):
        padding = _padding_run(attention_mask, kv_length, kv_offset)
        if padding is not False:
            return AttnkitMask(q_length, kv_length, band=band, padding=padding)
    dense = hf_masks.sdpa_mask(
        batch_size=batch_size,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        mask_function=mask_function,
        attention_mask=attention_mask,
        local_size=local_size,
        allow_is_causal_skip=False,
        allow_is_bidirectional_skip=False,
        use_vmap=use_vmap,
        device=device,
    )  # (B, 1, Lq, Lk) bool
    return AttnkitMask(q_length, kv_length, dense=dense, aligned=aligned)


def band_of(mask_function: Callable[..., Any]) -> Band | None:
    """The band of a mask function composed from transformers' own factories, else None.

    A window size and the parts of ``and_masks`` are read from the functions' closures, which
    ``torch.compile`` cannot trace (the functions are made inside the traced forward). Under
    compile a composed function is therefore not recognised: its mask is the dense one, as
    for a function of the user's (correct, only slower)."""
    if mask_function is hf_masks.causal_mask_function:
        return (None, 0)
    if mask_function is hf_masks.bidirectional_mask_function:
        return (None, None)
    if torch.compiler.is_compiling():
        return None
    code = getattr(mask_function, "__code__", None)
    if code is _SLIDING_CODE or code is _SLIDING_BIDIRECTIONAL_CODE:
        size = _closure(mask_function).get("sliding_window")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            return None
        return (size - 1, None) if code is _SLIDING_CODE else (size, size)
    if code is _AND_CODE:
        parts = _closure(mask_function).get("mask_functions")
        if not isinstance(parts, tuple):
            return None
        band: Band = (None, None)
        for part in parts:
            part_band = band_of(part)
            if part_band is None:
                return None
            band = _intersect(band, part_band)
        return band
    return None


def _closure(fn: Callable[..., Any]) -> dict[str, Any]:
    return dict(inspect.getclosurevars(fn).nonlocals)


def _intersect(a: Band, b: Band) -> Band:
    def tighter(x: int | None, y: int | None) -> int | None:
        return y if x is None else x if y is None else min(x, y)

    return tighter(a[0], b[0]), tighter(a[1], b[1])


def _attnkit_band(band: Band, q_len: int, kv_len: int) -> tuple[bool, tuple[int, int] | None]:
    """``(causal, window)`` for :func:`attnkit.attention` (queries bottom-right); a side of the
    band that hides no key of these sizes is dropped, so plain attention stays plain."""
    left, right = band
    if left is not None and left >= kv_len - 1:
        left = None  # even the last query sees key 0
    if right is not None and right >= q_len - 1:
        right = None  # even the first query (at key Lk − Lq) sees the last key
    if right == 0:
        return True, None if left is None else (left, 0)
    if left is None and right is None:
        return False, None
    unbounded = q_len + kv_len
    return False, (unbounded if left is None else left, unbounded if right is None else right)


def _padding_run(
    attention_mask: Tensor | None, kv_length: int, kv_offset: int
) -> attnkit.KeyLengths | bool | None:
    """The padding of these keys as :class:`attnkit.KeyLengths` when each item's real keys are
    one run (left and/or right padding), ``None`` when no key is padding, ``False`` when the
    padding is anything else (holes, packed sequences) or unknown (under ``torch.compile``,
    where the traced graph must hold for any padding: the dense mask)."""
    padding = hf_masks.prepare_padding_mask(attention_mask, kv_length, kv_offset)
    if padding is None:
        return None
    if padding.dim() != 2 or torch.compiler.is_compiling():  # the values decide: unknown
        return False
    keys = padding[:, kv_offset : kv_offset + kv_length].bool()  # (B, Lk)
    if bool(keys.all()):
        return None
    run = attnkit.KeyLengths.from_mask(keys)
    return False if run is None else run
