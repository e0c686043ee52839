"""FlexAttention's callables on attnkit (He et al. 2024; ``torch.nn.attention.flex_attention``).

* ``mask_mod(b, h, q_idx, kv_idx) -> bool`` says whether query ``q_idx`` of batch entry ``b``
  and query head ``h`` may see key ``kv_idx``; ``score_mod(score, b, h, q_idx, kv_idx) ->
  score`` changes a score (already scaled) before the softmax. attnkit calls them with
  broadcastable index tensors (``b (B, 1, 1, 1)``, ``h (1, H, 1, 1)``, ``q_idx``, ``kv_idx``
  over a tile) rather than through ``torch.vmap``: a function written element by element, as
  FlexAttention's are, gives the same answer either way.
* :func:`create_block_mask` evaluates a ``mask_mod`` once and classifies each block of
  queries × keys as empty, partial or full; pass the result as ``mask=`` to every call and
  layer that uses the mask. A ``torch.nn.attention.flex_attention.BlockMask`` is accepted too.
  A ``mask_mod`` that is exactly a band of indices (a sliding window, causal) is recognised
  while the table is built, and then runs on the band kernels (``local``, ``sdpa``).
* :func:`and_masks` / :func:`or_masks` combine ``mask_mod``s, as FlexAttention's do.

A callable is checked once, when the call is planned: its number of positional arguments, and
what it returns on a small grid of indices (a bool tensor for ``mask_mod``, a floating one for
``score_mod``, broadcastable to the grid). Errors name the callable.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from attnkit.kernels.block_mask import EMPTY, FULL, PARTIAL, BlockMask, MaskMod, index_grid

ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
EVAL_ELEMENTS = 1 << 22  # mask_mod elements evaluated at once while building a table

_FROM_TORCH: weakref.WeakKeyDictionary[Any, BlockMask] = weakref.WeakKeyDictionary()


def and_masks(*mask_mods: MaskMod) -> MaskMod:
    """A ``mask_mod`` that is True where every one of ``mask_mods`` is."""
    _check_callables(mask_mods, "and_masks")

    def and_mask(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        result = b.new_ones((), dtype=torch.bool)
        for mod in mask_mods:
            result = result & mod(b, h, q_idx, kv_idx)
        return result

    return and_mask


def or_masks(*mask_mods: MaskMod) -> MaskMod:
    """A ``mask_mod`` that is True where any one of ``mask_mods`` is."""
    _check_callables(mask_mods, "or_masks")

    def or_mask(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        result = b.new_zeros((), dtype=torch.bool)
        for mod in mask_mods:
            result = result | mod(b, h, q_idx, kv_idx)
        return result

    return or_mask


def soft_capping(cap: float) -> Callable[..., Tensor]:
    """A ``score_mod`` for logit soft-capping, ``cap · tanh(score / cap)`` (Gemma 2's
    ``attn_logit_softcapping``), applied to the scaled scores before any mask.

    Raises:
        ValueError: ``cap`` is not a positive finite number.
    """
    if not (cap > 0 and cap != float("inf")):
        raise ValueError(f"softcap must be a positive finite number, got {cap!r}")

    def capped(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return torch.tanh(score / cap) * cap

    return capped


def _check_callables(mods: tuple[Any, ...], what: str) -> None:
    bad = [type(m).__name__ for m in mods if not callable(m)]
    if bad:
        raise TypeError(f"{what}: every argument must be a mask_mod callable, got {bad}")


def create_block_mask(
    mask_mod: MaskMod,
    B: int | None,
    H: int | None,
    Q_LEN: int,
    KV_LEN: int,
    device: torch.device | str | None = None,
    BLOCK_SIZE: int | tuple[int, int] = 128,
) -> BlockMask:
    """``mask_mod`` with its table of empty, partial and full blocks, built once (FlexAttention's
    ``create_block_mask``, same arguments; ``B``/``H`` ``None`` = the same for every batch entry /
    head). Pass the result as ``mask=`` to :func:`attnkit.attention`.

    Raises:
        TypeError: ``mask_mod`` is not a callable of 4 positional arguments, or does not
            return a bool tensor.
        ValueError: sizes that are not positive integers, or a ``mask_mod`` whose result does
            not broadcast over the indices.
    """
    sizes = {"B": 1 if B is None else B, "H": 1 if H is None else H, "Q_LEN": Q_LEN,
             "KV_LEN": KV_LEN}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"create_block_mask: {name} must be a positive integer, got {value!r}")
    block = (BLOCK_SIZE, BLOCK_SIZE) if isinstance(BLOCK_SIZE, int) else tuple(BLOCK_SIZE)
    if len(block) != 2 or not all(isinstance(n, int) and n >= 1 for n in block):
        raise ValueError(
            f"create_block_mask: BLOCK_SIZE must be an int or a pair, got {BLOCK_SIZE!r}"
        )
    dev = torch.device("cpu" if device is None else device)
    b, h = sizes["B"], sizes["H"]
    check_mask_mod(mask_mod, b, h, Q_LEN, KV_LEN, dev)
    return build_block_mask(mask_mod, b, h, (Q_LEN, KV_LEN), (block[0], block[1]), dev)


def build_block_mask(
    mask_mod: MaskMod, batch: int, heads: int, seq_lengths: tuple[int, int],
    block_size: tuple[int, int], device: torch.device,
) -> BlockMask:
    """Evaluate ``mask_mod`` on every query × key pair (a few query blocks at a time, so
    memory stays bounded) and classify each block: no pair visible, some, all."""
    (lq, lk), (qbs, kbs) = seq_lengths, block_size
    nq, nk = -(-lq // qbs), -(-lk // kbs)
    cols = torch.arange(lk, device=device)
    rows_per = max(qbs, (EVAL_ELEMENTS // max(1, lk * batch * heads)) // qbs * qbs)
    parts = []
    low, high = lk, -lq  # the range of kv_idx − q_idx over the visible pairs
    for r0 in range(0, lq, rows_per):
        r1 = min(lq, r0 + rows_per)
        rows = torch.arange(r0, r1, device=device).unsqueeze(-1)  # (r, 1)
        allowed = mask_mod(*index_grid(batch, heads, rows, cols))  # (B|1, H|1, r|1, Lk|1)
        allowed = allowed.expand(*allowed.shape[:2], r1 - r0, lk)
        diff = (cols - rows).expand(allowed.shape)  # (B|1, H|1, r, Lk)
        if bool(allowed.any()):
            low = min(low, int(diff[allowed].min()))
            high = max(high, int(diff[allowed].max()))
        allowed = allowed.to(torch.int32)
        nr = -(-(r1 - r0) // qbs)
        padded = torch.nn.functional.pad(allowed, (0, nk * kbs - lk, 0, nr * qbs - (r1 - r0)))
        counts = padded.view(*padded.shape[:2], nr, qbs, nk, kbs).sum(dim=(3, 5))
        parts.append(counts)  # (B|1, H|1, nr, nk): visible pairs per block
    counts = torch.cat(parts, dim=2)  # (B|1, H|1, nq, nk)
    row_sizes = (lq - torch.arange(nq, device=device) * qbs).clamp_(max=qbs)  # (nq,)
    col_sizes = (lk - torch.arange(nk, device=device) * kbs).clamp_(max=kbs)  # (nk,)
    size = row_sizes.view(-1, 1) * col_sizes  # (nq, nk): pairs per block
    table = torch.where(counts == 0, EMPTY, torch.where(counts == size, FULL, PARTIAL))
    band = _exact_band(int(counts.sum()) // (counts.shape[0] * counts.shape[1]), low, high,
                       seq_lengths) if high >= low else None
    return BlockMask(mask_mod, table.to(torch.int8), block_size, seq_lengths, band)


def _exact_band(
    visible: int, low: int, high: int, seq_lengths: tuple[int, int]
) -> tuple[int | None, int | None] | None:
    """``(left, right)`` if the ``visible`` pairs (per batch entry and head) are every pair
    with ``low ≤ kv_idx − q_idx ≤ high``, i.e. the mask is exactly that band, else ``None``."""
    lq, lk = seq_lengths
    i = torch.arange(lq)
    in_band = (i + high).clamp(max=lk - 1) - (i + low).clamp(min=0) + 1  # (Lq,)
    if int(in_band.clamp(min=0).sum()) != visible:
        return None
    return (None if -low >= lq - 1 else -low), (None if high >= lk - 1 else high)


def from_torch(block_mask: Any) -> BlockMask:
    """The table of a ``torch.nn.attention.flex_attention.BlockMask`` (its partial and full
    ``kv`` block lists made dense)."""
    q_len, kv_len = (int(n) for n in block_mask.seq_lengths)
    size = (int(block_mask.BLOCK_SIZE[0]), int(block_mask.BLOCK_SIZE[1]))
    nq, nk = -(-q_len // size[0]), -(-kv_len // size[1])

    def dense(num: Tensor, indices: Tensor) -> Tensor:
        listed = torch.arange(indices.shape[-1], device=num.device) < num.unsqueeze(-1)
        where = torch.where(listed, indices.long(), nk)  # unlisted: one column past the end
        out = torch.zeros(*indices.shape[:-1], nk + 1, dtype=torch.bool, device=num.device)
        return out.scatter_(-1, where, True)[..., :nq, :nk]  # (B, H, nq, nk)

    table = dense(block_mask.kv_num_blocks, block_mask.kv_indices).to(torch.int8)
    if block_mask.full_kv_num_blocks is not None:
        table = table.masked_fill(
            dense(block_mask.full_kv_num_blocks, block_mask.full_kv_indices), FULL
        )
    return BlockMask(block_mask.mask_mod, table, size, (q_len, kv_len))


def as_block_mask(mask: object, batch: int, heads: int, q_len: int, kv_len: int,
                  device: torch.device) -> BlockMask | None:
    """``mask`` as attnkit's :class:`BlockMask` if it is one of attnkit's or torch's (converted
    once per object), else ``None``.

    Raises:
        ValueError: a block mask made for other lengths, batch or heads.
    """
    if not isinstance(mask, BlockMask):
        if type(mask).__name__ != "BlockMask" or not hasattr(mask, "kv_num_blocks"):
            return None
        if mask not in _FROM_TORCH:
            _FROM_TORCH[mask] = from_torch(mask)
        mask = _FROM_TORCH[mask]
    table = mask.table
    if tuple(mask.seq_lengths) != (q_len, kv_len) or table.shape[0] not in (1, batch) or (
        table.shape[1] not in (1, heads)
    ):
        raise ValueError(
            f"mask: the block mask was made for (B, H, Q_LEN, KV_LEN) = "
            f"({table.shape[0]}, {table.shape[1]}, {mask.seq_lengths[0]}, {mask.seq_lengths[1]}) "
            f"but the call has ({batch}, {heads}, {q_len}, {kv_len})"
        )
    if table.device != device:
        raise ValueError(f"mask: the block mask is on {table.device} but q is on {device}")
    check_mask_mod(mask.mask_mod, batch, heads, q_len, kv_len, device)
    return mask


def _positional(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` takes without defaults (``None``: any number)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def _probe(fn: Callable[..., Any], name: str, args: tuple[Tensor, ...]) -> Tensor:
    """``fn(*args)`` on a small grid of indices, its failures named."""
    try:
        out = fn(*args)
    except Exception as error:  # the user's code: say which callable failed, keep the cause
        shapes = ", ".join(str(tuple(a.shape)) for a in args)
        raise ValueError(
            f"{name} failed on index tensors of shapes {shapes}: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(out, Tensor):
        raise TypeError(f"{name} must return a tensor, got {type(out).__name__}")
    return out


def _grid(batch: int, heads: int, q_len: int, kv_len: int, device: torch.device):
    """Index tensors over the corners of the grid (first and last query, first and last key)."""
    rows = torch.tensor([0, q_len - 1], device=device).unsqueeze(-1)  # (2, 1)
    cols = torch.tensor([0, kv_len - 1], device=device)  # (2,)
    return index_grid(min(batch, 2), min(heads, 2), rows, cols)


def _check_arity(fn: object, name: str, count: int, signature: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be a callable {signature}, got {type(fn).__name__}")
    got = _positional(fn)
    if got is not None and got != count:
        raise TypeError(
            f"{name} must take {count} positional arguments {signature}, got a callable "
            f"taking {got}"
        )


def check_mask_mod(
    fn: object, batch: int, heads: int, q_len: int, kv_len: int, device: torch.device,
    name: str = "mask_mod",
) -> None:
    """Raise ``TypeError``/``ValueError`` naming ``fn`` unless it is a ``mask_mod``."""
    _check_arity(fn, name, 4, "(b, h, q_idx, kv_idx)")
    grid = _grid(batch, heads, q_len, kv_len, device)
    out = _probe(fn, name, grid)  # type: ignore[arg-type]
    if out.dtype != torch.bool:
        raise TypeError(f"{name} must return a bool tensor (True = may attend), got {out.dtype}")
    _check_broadcasts(out, grid, name)


def check_score_mod(
    fn: object, batch: int, heads: int, q_len: int, kv_len: int, dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, ...]:
    """Raise ``TypeError``/``ValueError`` naming ``fn`` unless it is a ``score_mod``; return the
    tensors requiring gradients that it reads (found through autograd on the probe)."""
    _check_arity(fn, "score_mod", 5, "(score, b, h, q_idx, kv_idx)")
    grid = _grid(batch, heads, q_len, kv_len, device)
    shape = torch.broadcast_shapes(*(t.shape for t in grid))
    score = torch.zeros(shape, dtype=torch.promote_types(dtype, torch.float32), device=device)
    grads = torch.is_grad_enabled()
    score.requires_grad_(grads)
    out = _probe(fn, "score_mod", (score, *grid))  # type: ignore[arg-type]
    if not out.is_floating_point():
        raise TypeError(f"score_mod must return a floating-point tensor, got {out.dtype}")
    _check_broadcasts(out, grid, "score_mod")
    return _leaves(out, score) if grads and out.requires_grad else ()


def _check_broadcasts(out: Tensor, grid: tuple[Tensor, ...], name: str) -> None:
    shape = torch.broadcast_shapes(*(t.shape for t in grid))
    try:
        ok = torch.broadcast_shapes(out.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} must return one value per index (a tensor broadcastable to the shape "
            f"{tuple(shape)} of its index arguments), got shape {tuple(out.shape)}"
        )


def _leaves(out: Tensor, own: Tensor) -> tuple[Tensor, ...]:
    """The leaf tensors requiring gradients that ``out`` depends on, besides ``own``."""
    found: list[Tensor] = []
    seen: set[int] = set()
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor) and variable is not own:
            found.append(variable)
        stack.extend(fn for fn, _ in node.next_functions)
    return tuple(found)


__all__ = ["and_masks", "create_block_mask", "or_masks", "soft_capping"]
