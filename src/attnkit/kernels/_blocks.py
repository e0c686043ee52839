"""What the block kernels (``chunked``, ``local``, ``additive``) share.

* The **rows layout**: a kernel works on 3-D tensors ``(B·Hkv, G·L, X)``, a pure view of the
  usual ``(B, H, L, X)`` (head ``h = hkv·G + g``). Every row of one batch entry uses the same
  key/value head, so one ``bmm`` serves grouped-query heads without copying keys or values,
  and key/value gradients sum over the group by themselves. Query blocks are taken per group
  ``g``: rows ``g·Lq + q0 .. g·Lq + q1``.
* :class:`Blocks`: the structured constraints of a plan (causal, window, key lengths) turned
  into key spans per query block, so kernels skip key blocks no query can see and build a
  block mask only where one is needed.
* :class:`BlockDropout`: dropout whose keep-mask for a block is regenerated from a seed, so
  the backward pass sees exactly the mask of the forward pass without storing it.
* :func:`softmax_`: PyTorch's fused softmax in place, with the log-sum-exp recovered cheaply.

Shape legend: B batch, Hq query heads, Hkv key/value heads, G = Hq // Hkv, Lq/Lk query/key
length, D head dim, Dv value dim, qb/kb query/key block length.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.kernels.plan import AttentionPlan, band_covers

NEG_INF = float("-inf")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype blocks are computed in: float32 for 16-bit inputs, else the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def to_rows(x: Tensor, kv_heads: int, dtype: torch.dtype) -> Tensor:
    """``(B, H, L, X)`` -> ``(B·Hkv, (H/Hkv)·L, X)`` in ``dtype`` (a view when possible)."""
    b, h, length, width = x.shape
    return x.to(dtype).reshape(b * kv_heads, (h // kv_heads) * length, width)  # (B·Hkv, G·L, X)


def from_rows(x: Tensor, batch: int, heads: int) -> Tensor:
    """``(B·Hkv, G·L, X)`` -> ``(B, Hq, L, X)``; also ``(B·Hkv, G·L)`` -> ``(B, Hq, L)``."""
    return x.reshape(batch, heads, -1, *x.shape[2:])  # (B, Hq, L[, X])


def head_slice(t: Tensor, kv_heads: int, group: int, g: int) -> Tensor:
    """The query heads ``hkv·G + g`` of ``t (B|1, Hq|1, ...)``: ``(B|1, Hkv|1, ...)``."""
    if t.shape[1] == 1:
        return t
    return t.reshape(t.shape[0], kv_heads, group, *t.shape[2:])[:, :, g]  # (B|1, Hkv, ...)


class Blocks:
    """The structured constraints of ``plan``, in the form a block loop needs.

    Query ``i`` sits at key position ``Lk - Lq + i`` and, under ``causal``/``window``, sees
    keys ``p - left .. p + right``; under key lengths, keys ``j < lengths[b]``.
    """

    def __init__(self, plan: AttentionPlan) -> None:
        s = plan.shapes
        self.plan = plan
        self.batch, self.q_heads, self.kv_heads, self.group = (
            s.batch, s.q_heads, s.kv_heads, s.group,
        )
        self.q_len, self.kv_len = s.q_len, s.kv_len
        self.offset = s.kv_len - s.q_len
        left, right = plan.window if plan.window is not None else (None, None)
        if plan.causal:
            right = 0 if right is None else min(right, 0)
        self.left, self.right = left, right
        self.max_len, self.min_len = s.kv_len, s.kv_len
        if plan.key_lengths is not None:
            lengths = plan.key_lengths.clamp(0, s.kv_len)
            self.max_len, self.min_len = int(lengths.max()), int(lengths.min())

    def span(self, q0: int, q1: int) -> tuple[int, int]:
        """Keys ``[lo, hi)`` that some query in ``q0:q1`` may see (``hi <= lo``: none)."""
        lo, hi = 0, self.max_len
        if self.left is not None:
            lo = max(lo, self.offset + q0 - self.left)
        if self.right is not None:
            hi = min(hi, self.offset + q1 - 1 + self.right + 1)
        return lo, max(lo, hi)

    def fully_visible(self, q0: int, q1: int, k0: int, k1: int) -> bool:
        """Whether the structured constraints hide nothing in the block."""
        first, last = self.offset + q0, self.offset + q1 - 1  # query positions
        return band_covers(first, last, k0, k1, self.left, self.right) and k1 <= self.min_len

    def mask(self, q0: int, q1: int, k0: int, k1: int) -> Tensor | None:
        """Bool ``(B|1, Hq|1, q1-q0, k1-k0)`` (True = may attend), or ``None`` if all may."""
        user = self.plan.mask
        if user is None and self.fully_visible(q0, q1, k0, k1):
            return None
        out = None
        if self.left is not None or self.right is not None:
            # Query i sits at p = offset + q0 + i; key j at k0 + j; keep -left <= (k0 + j) - p
            # <= right, i.e. j - i within [d - left, d + right] for d = offset + q0 - k0.
            d = self.offset + q0 - k0
            out = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool, device=self.plan.device)
            if self.right is not None:
                out = out.tril(d + self.right)
            if self.left is not None:
                out = out.triu(d - self.left)
            out = out.view(1, 1, q1 - q0, k1 - k0)  # (1, 1, q, k)
        lengths = self.plan.key_lengths
        if lengths is not None and k1 > self.min_len:
            j = torch.arange(k0, k1, device=self.plan.device)
            real = (j < lengths.to(j.device).unsqueeze(-1)).view(-1, 1, 1, k1 - k0)  # (B, 1, 1, k)
            out = real if out is None else out & real
        if user is not None:
            part = user[:, :, q0:q1, k0:k1]  # (B|1, Hq|1, q, k)
            out = part if out is None else out & part
        return out

    def bias(self, q0: int, q1: int, k0: int, k1: int) -> Tensor | None:
        """Float ``(B|1, Hq|1, q|1, k|1)`` additive bias of the block, or ``None``."""
        bias = self.plan.bias
        if bias is None:
            return None
        rows = slice(q0, q1) if bias.shape[2] != 1 else slice(None)
        cols = slice(k0, k1) if bias.shape[3] != 1 else slice(None)
        return bias[:, :, rows, cols]

    def parts(self, q0: int, q1: int, k0: int, k1: int) -> tuple[Tensor | None, Tensor | None]:
        """``(bias, mask)`` of the block (:meth:`bias`, :meth:`mask`); compute once per block."""
        return self.bias(q0, q1, k0, k1), self.mask(q0, q1, k0, k1)

    def apply(
        self,
        s: Tensor,
        parts: tuple[Tensor | None, Tensor | None],
        g: int,
        heads: tuple[int, int] | None = None,
    ) -> Tensor:
        """Add the bias and hide masked keys (``-inf``) in scores ``s``, in place.

        ``s (n, q, k)`` holds the rows of group ``g`` for the flattened batch entries
        ``heads = (h0, h1)`` of ``B·Hkv`` (all of them when ``None``).
        """
        bias, mask = parts
        n_all = self.batch * self.kv_heads
        h0, h1 = heads if heads is not None else (0, n_all)
        target = s.view(self.batch, self.kv_heads, *s.shape[1:]) if h1 - h0 == n_all else s
        for part in (bias, mask):
            if part is None:
                continue
            piece = head_slice(part, self.kv_heads, self.group, g)  # (B|1, Hkv|1, q|1, k|1)
            if h1 - h0 != n_all:
                piece = self._select(piece, h0, h1)
            if part is bias:
                target.add_(piece.to(s.dtype))
            else:
                target.masked_fill_(~piece, NEG_INF)
        return s

    def _select(self, t: Tensor, h0: int, h1: int) -> Tensor:
        """``t (B|1, Hkv|1, q|1, k|1)`` for the flattened batch entries ``h0:h1`` of ``B·Hkv``."""
        if h1 - h0 == 1:
            b, h = divmod(h0, self.kv_heads)
            return t[b if t.shape[0] > 1 else 0, h if t.shape[1] > 1 else 0]  # (q|1, k|1)
        full = t.expand(self.batch, self.kv_heads, *t.shape[2:])  # (B, Hkv, q|1, k|1)
        return full.reshape(self.batch * self.kv_heads, *t.shape[2:])[h0:h1]  # (n, q|1, k|1)


def softmax_(s: Tensor, may_be_empty: bool = True, lse: bool = True) -> Tensor | None:
    """Softmax of ``s (..., k)`` over its last dim **in place**; returns the lse ``(..., 1)``.

    PyTorch's fused softmax is much faster on CPU than ``exp_`` alone (it uses a cheaper
    vectorised exponential), so kernels normalise with it and recover the log-sum-exp from
    two cheap reductions: the largest weight is ``p_max = exp(m − lse)``, so
    ``lse = m − log(p_max)``. Rows that are all ``-inf`` (nothing to attend to) become 0 with
    lse ``-inf`` (``may_be_empty=False`` skips that check when no row can be empty).
    ``lse=False`` skips computing it (returns ``None``).
    """
    if not lse:
        if s.is_contiguous():
            torch._softmax(s, -1, False, out=s)
        else:
            s.copy_(torch.softmax(s, dim=-1))
        if may_be_empty:
            s.nan_to_num_(0.0)  # rows with nothing to attend to: 0/0
        return None
    m = s.amax(dim=-1, keepdim=True)  # (..., 1)
    if s.is_contiguous():  # in place: the last-dim kernel reads a row, then writes it
        torch._softmax(s, -1, False, out=s)
    else:  # out= on a strided view is not in-place safe
        s.copy_(torch.softmax(s, dim=-1))
    empty = m == NEG_INF
    if may_be_empty and bool(empty.any()):
        s.masked_fill_(empty, 0.0)
        p_max = s.amax(dim=-1, keepdim=True)
        return torch.where(empty, m, m - p_max.log())
    return m - s.amax(dim=-1, keepdim=True).log()


def reduce_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum ``grad (B, H, q, k)`` over the dims where ``shape`` broadcasts (size 1)."""
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


def add_bias_grad(
    dbias: Tensor,
    ds: Tensor,
    blocks: Blocks,
    g: int,
    box: tuple[int, int, int, int],
    heads: tuple[int, int] | None = None,
) -> None:
    """Accumulate the score gradient ``ds (n, q, k)`` of one block into ``dbias``.

    ``box = (q0, q1, k0, k1)``; ``heads`` as in :meth:`Blocks.apply`: all of ``B·Hkv``, or one.
    """
    q0, q1, k0, k1 = box
    b, hkv, grp = blocks.batch, blocks.kv_heads, blocks.group
    rows = slice(q0, q1) if dbias.shape[2] != 1 else slice(None)
    cols = slice(k0, k1) if dbias.shape[3] != 1 else slice(None)
    target = dbias[:, :, rows, cols]  # (B|1, Hq|1, q|1, k|1)
    if target.shape[1] != 1:
        target = target.view(target.shape[0], hkv, grp, *target.shape[2:])[:, :, g]
    if heads is None or heads[1] - heads[0] == b * hkv:
        ds4 = ds.view(b, hkv, q1 - q0, k1 - k0)  # (B, Hkv, q, k)
        target.add_(reduce_to(ds4, target.shape))
        return
    bi, hi = divmod(heads[0], hkv)
    one = target[bi if target.shape[0] > 1 else 0, hi if target.shape[1] > 1 else 0]
    one.add_(reduce_to(ds[0], one.shape))  # (q|1, k|1)


class BlockDropout:
    """Dropout whose keep-mask of each block is regenerated from ``(seed, block key)``.

    The seed is drawn from PyTorch's default generator, so ``torch.manual_seed`` makes a run
    reproducible. ``keep(key, shape)`` returns the float multiplier (0 or ``1/(1-p)``).
    """

    _MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)

    def __init__(self, p: float, device: torch.device) -> None:
        self.p = p
        self.device = device
        self.seed = int(torch.randint(0, 2**62, (1,)).item())

    def keep(self, key: tuple[int, int, int], shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        mixed = self.seed
        for part, mix in zip(key, self._MIX, strict=True):
            mixed = (mixed ^ ((part + 1) * mix)) % (2**63)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(mixed)
        uniform = torch.rand(shape, generator=gen, device=self.device, dtype=dtype)
        return (uniform >= self.p).to(dtype).mul_(1.0 / (1.0 - self.p))
