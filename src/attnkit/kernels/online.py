"""The online softmax and its FlashAttention-2 backward, written once for every block kernel.

A kernel says how a tile's scores are made (a :class:`~attnkit.kernels.tiling.TileScores`;
those of dot products and of a ``score_mod`` are in :mod:`~attnkit.kernels.tile_scores`) and
how the rows are cut into tiles (a :class:`~attnkit.kernels.tiling.Tiling`, with its sizes and
dropout, in :mod:`~attnkit.kernels.tiling`); this module does the rest.

* :func:`attend_` is one tile of the forward pass: the tile is normalised on its own by
  PyTorch's fused softmax (``P_b``, log-sum-exp ``lse_b``; FORMULAS.md "Online softmax"), and
  ``P_b V_b`` is merged into the running result by :func:`merge_` (FORMULAS.md "Merging two
  partial results"): ``lse' = log(e^{lse} + e^{lse_b})``, ``O' = e^{lse−lse'} O +
  e^{lse_b−lse'} O_b``. Fused softmax plus merge is the online softmax ``m' = max(m, rowmax
  S_b)``, ``ℓ' = e^{m−m'} ℓ + rowsum e^{S_b−m'}`` with the exponentials done by the softmax,
  which on CPU is several times cheaper than ``exp`` itself.
* :func:`tile_grads` is one tile of the backward pass (Dao et al. 2023, FlashAttention-2):
  ``dV += Pᵀ dO``, ``dP = dO Vᵀ (+ dW)``, ``dS = P ∘ (dP − D)`` with ``D = rowsum(dO ∘ O)``
  (``= rowsum(P ∘ dP)``), the score gradient ``dS`` going back to the :class:`TileScores`.
* :func:`forward`, :func:`backward` and :func:`probabilities` walk the tiles of the rows layout
  that the :class:`~attnkit.kernels.visibility.Visibility` leaves visible: ``chunked``,
  ``additive`` and ring attention's block step use them; ``local`` and the weights path use
  the tile functions in their own layouts. :func:`probabilities` is the second pass with the
  final lse (``P = exp(S − lse)``) that hands each tile to a consumer (write the weights, or
  any reduction of them).
* A :class:`TileScores` may do whole tiles itself (:func:`~attnkit.kernels.tiling.fusable`):
  on CPU, plain dot-product tiles go to PyTorch's fused FlashAttention kernel, forward (the
  tile's ``out_b`` and ``lse_b``, merged here as above) and backward (``tile_grads`` and the
  score gradients in one call, from the final ``out`` and ``lse``). It keeps its blocks of
  scores in cache, where :func:`attend_`/:func:`tile_grads` make a pass over the tile's
  memory per operation, and it is one parallel region per tile instead of about ten.

The **rows layout**: a kernel works on ``(B·Hkv, G·L, X)``, a pure view of ``(B, H, L, X)``
(head ``h = hkv·G + g``). Every row of a batch entry uses one key/value head, so one ``bmm``
serves grouped-query heads without copying keys or values, and key/value gradients sum over
the group by themselves. Query blocks are taken per group: rows ``g·Lq + q0 .. g·Lq + q1``.

Shape legend: B batch, Hq/Hkv query/key-value heads, G = Hq/Hkv, n = B·Hkv, Lq/Lk lengths,
D/Dv dims, q/k a tile's rows/keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from attnkit.kernels.tiling import (
    Box,
    Consumer,
    TileScores,
    Tiling,
    fusable,
    fused_tiling,
    masked,
    scored,
)
from attnkit.kernels.visibility import NEG_INF


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype tiles are computed in: float32 for 16-bit inputs, else the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def to_rows(x: Tensor, kv_heads: int, dtype: torch.dtype) -> Tensor:
    """``(B, H, L, X)`` -> ``(B·Hkv, (H/Hkv)·L, X)`` in ``dtype`` (a view when possible)."""
    b, h, length, width = x.shape
    return x.to(dtype).reshape(b * kv_heads, (h // kv_heads) * length, width)  # (n, G·L, X)


def from_rows(x: Tensor, batch: int, heads: int) -> Tensor:
    """``(B·Hkv, G·L, X)`` -> ``(B, Hq, L, X)``; also ``(B·Hkv, G·L)`` -> ``(B, Hq, L)``."""
    return x.reshape(batch, heads, -1, *x.shape[2:])  # (B, Hq, L[, X])


def returned(
    ctx: Any, out: Tensor, lse: Tensor | None, weights: Tensor | None, summary: Any,
    batch: int, heads: int, dtype: torch.dtype,
) -> tuple[Tensor | None, ...]:
    """What a block kernel's autograd ``forward`` returns, from its rows layout: ``out
    (B, Hq, Lq, Dv)`` in ``dtype``, ``lse (B, Hq, Lq)`` float32 (or ``None``), then the
    summary's parts (one tensor, or values and indices) or the weights ``(B, Hq, Lq, Lk)`` in
    ``dtype`` (or ``None``). The lse and a summary are marked non-differentiable."""
    out_user = from_rows(out, batch, heads).to(dtype)  # (B, Hq, Lq, Dv)
    lse_user = None if lse is None else from_rows(lse, batch, heads).float()  # (B, Hq, Lq)
    if lse_user is not None:
        ctx.mark_non_differentiable(lse_user)
    if summary is not None:  # forward only: (values, indices) or one tensor
        parts = summary if isinstance(summary, tuple) else (summary,)
        ctx.mark_non_differentiable(*parts)
        return out_user, lse_user, *parts
    w_user = None if weights is None else from_rows(weights, batch, heads).to(dtype)
    return out_user, lse_user, w_user


def no_double_backward(kernel: str) -> None:
    """Raise when autograd asks for the gradient of this kernel's gradient."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{kernel} kernel: no double backward (the gradient of a gradient, e.g. "
            f"create_graph=True); use backend='reference', which supports it"
        )


# ---------------------------------------------------------------------------------------------
# One tile


def softmax_(s: Tensor, may_be_empty: bool = True, lse: bool = True) -> Tensor | None:
    """Softmax of ``s (..., k)`` over its last dim **in place**; returns the lse ``(..., 1)``.

    PyTorch's fused softmax is much faster on CPU than ``exp_`` alone, so tiles are normalised
    with it and the log-sum-exp is recovered from two cheap reductions: the largest weight is
    ``p_max = exp(m − lse)``, so ``lse = m − log(p_max)``. Rows that are all ``−inf`` (nothing
    to attend to) become 0 with lse ``−inf`` (``may_be_empty=False`` skips that check).
    ``lse=False`` skips computing it (returns ``None``).
    """
    m = s.amax(dim=-1, keepdim=True) if lse else None  # (..., 1)
    if s.is_contiguous():  # in place: the last-dim kernel reads a row, then writes it
        torch._softmax(s, -1, False, out=s)
    else:  # out= on a strided view is not in-place safe
        s.copy_(torch.softmax(s, dim=-1))
    if m is None:
        if may_be_empty:
            s.nan_to_num_(0.0)  # rows with nothing to attend to: 0/0
        return None
    empty = m == NEG_INF
    if may_be_empty and bool(empty.any()):
        s.masked_fill_(empty, 0.0)
        return torch.where(empty, m, m - s.amax(dim=-1, keepdim=True).log())
    return m - s.amax(dim=-1, keepdim=True).log()


def merge_(out: Tensor, lse: Tensor, out_b: Tensor | None, lse_b: Tensor) -> None:
    """Merge a partial result over other keys into ``out (..., q, Dv)``, ``lse (..., q)`` in
    place (FORMULAS.md, "Merging two partial results"); ``out_b`` is overwritten. Rows empty
    on both sides stay 0 with lse ``−inf``.

    ``out_b=None`` is a partial result of value 0: attention sinks, a key of score ``lse_b``
    that adds nothing to the output, merged after the last tile (``out · exp(lse − lse')``).
    The backward pass is then FlashAttention-2's with the merged ``lse'`` and ``out'``
    (``P' = exp(S − lse')`` are the weights); the sinks' own gradient is :func:`sink_grad`."""
    new = torch.logaddexp(lse, lse_b)  # (..., q)
    safe = new.masked_fill(new == NEG_INF, 0.0)
    out.mul_((lse - safe).exp_().unsqueeze(-1))
    if out_b is not None:
        out.add_(out_b.mul_((lse_b - safe).exp_().unsqueeze(-1)))
    lse.copy_(new)


def sink_share(lse: Tensor, sink: Tensor) -> Tensor:
    """``exp(lse − lse')``, ``lse' = log(e^{lse} + e^{σ})``: the share of a row's weights its
    keys keep beside its sink ``σ`` (the factor :func:`merge_` applies to ``out``), what
    weights normalised without the sink are multiplied by to become the weights with it
    (``lse``, ``sink`` and the result of one shape; 0 where the row sees no key)."""
    merged = torch.logaddexp(lse, sink)
    return (lse - merged.masked_fill(merged == NEG_INF, 0.0)).exp_()


def sink_grad(
    dout: Tensor, out: Tensor, lse: Tensor, sink: Tensor, row_dot: Tensor | None = None
) -> Tensor:
    """The gradient of sinks merged by :func:`merge_` (``out_b=None``), ``(n, rows)``: with
    ``D = rowsum(dO ∘ O')``, ``−D · p_sink``, ``p_sink = exp(sink − lse')`` the weight the
    sink took (0 where the row holds nothing). ``row_dot (n, rows)``: ``D``, when the caller
    has it already (a pass over ``dout`` and ``out`` fewer)."""
    if row_dot is None:
        row_dot = (dout * out).sum(dim=-1)  # (n, rows): D
    empty = lse == NEG_INF
    taken = (sink - lse.masked_fill(empty, 0.0)).exp_().masked_fill_(empty, 0.0)
    return -row_dot * taken


def add_product_(target: Tensor, a: Tensor, b: Tensor, alpha: float = 1.0) -> None:
    """``target += alpha · a @ b`` for batched ``a (n, i, j)``, ``b (n, j, k)``. When
    ``target`` and ``b`` are slices of the rows layout (not contiguous), PyTorch's
    ``baddbmm_`` multiplies one batch entry at a time, each product threaded on its own
    (several times the CPU time on two threads); a ``bmm`` into fresh memory runs the entries
    in parallel, and the sum is one more pass over ``target``."""
    if target.is_contiguous():
        target.baddbmm_(a, b, alpha=alpha)
    else:
        target.add_(torch.bmm(a, b), alpha=alpha)


ROW_PARTS = 4  # blocks of rows a product of one entry is cut into (see product_)


def product_(p: Tensor, v: Tensor, out: Tensor) -> None:
    """``out = p @ v`` for ``p (n, q, k)``, ``v (n, k, Dv)``, ``out (n, q, Dv)`` contiguous.

    A product of one entry (``n = 1``) with many rows is cut into ``ROW_PARTS`` blocks of rows
    sharing ``v``, one batched product: PyTorch's threads then each take whole blocks. As one
    product of few columns (``Dv``) over many keys it scaled badly on two threads: a tile of
    whole rows (1,024 × 4,096) times the values (4,096 × 64) took 5.0 ms with the other core
    busy against 3.6 ms on one thread; cut in four, 3.4 ms. (The score product, cut alike,
    was 4–6 % slower on one thread: it is left whole.)"""
    n, q = p.shape[:2]
    if n == 1 and q % ROW_PARTS == 0 and q >= 64 * ROW_PARTS:
        rows = q // ROW_PARTS
        p, v = p.view(ROW_PARTS, rows, -1), v.expand(ROW_PARTS, -1, -1)  # (parts, rows|k, ·)
        out = out.view(ROW_PARTS, rows, -1)  # (parts, rows, Dv)
    torch.bmm(p, v, out=out)


def attend_(
    s: Tensor,
    v: Tensor,
    acc: Tensor,
    lse: Tensor | None,
    *,
    first: bool,
    may_be_empty: bool,
    keep: Tensor | None = None,
) -> None:
    """One tile of the online softmax. ``s (n, q, k)`` masked scores (overwritten by the
    tile's probabilities, before dropout); ``v (n, k, Dv)``; ``acc (n, q, Dv)`` and
    ``lse (n, q)`` the running output and log-sum-exp, updated in place (``first``:
    overwritten; ``lse=None``: a tile of whole rows, whose lse nobody needs); ``keep``: the
    dropout multiplier."""
    lse_b = softmax_(s, may_be_empty, lse=lse is not None)  # (..., q, 1)
    p = s if keep is None else s * keep  # s may be the returned weights: keep them undropped
    if first:
        product_(p, v, acc)  # (..., q, Dv)
        if lse is not None:
            lse.copy_(lse_b.squeeze(-1))
        return
    merge_(acc, lse, torch.bmm(p, v), lse_b.squeeze(-1))


def tile_grads(
    p: Tensor,
    do: Tensor,
    v_t: Tensor,
    dv: Tensor,
    *,
    row_dot: Tensor | None,
    accumulate: bool = True,
    keep: Tensor | None = None,
    dw: Tensor | None = None,
    work: Tensor | None = None,
) -> Tensor:
    """FlashAttention-2's backward of one tile; returns ``dS (..., q, k)``.

    ``p (n, q, k)`` the probabilities ``P``; ``do (n, q, Dv)``; ``v_t (n, Dv, k)``;
    ``dv (n, k, Dv)`` receives ``Pᵀ dO`` (added, or written when not ``accumulate``);
    ``row_dot (n, q, 1)`` is ``D`` (``None``: ``rowsum(P ∘ dP)``, for tiles of whole rows);
    ``keep`` the dropout multiplier; ``dw (n, q, k)`` the gradient of the returned weights;
    ``work`` a buffer of ``dS``'s shape.
    """
    dp = torch.bmm(do, v_t, out=work)  # (..., q, k)
    kept = p if keep is None else p * keep
    if accumulate:
        add_product_(dv, kept.transpose(-1, -2), do)
    else:
        torch.bmm(kept.transpose(-1, -2), do, out=dv)
    if keep is not None:
        dp.mul_(keep)
    if dw is not None:
        dp.add_(dw)
    if row_dot is None:
        row_dot = torch.linalg.vecdot(p, dp).unsqueeze(-1)  # (..., q, 1)
    return dp.sub_(row_dot).mul_(p)  # dS = P ∘ (dP − D)


def forward(
    sb: TileScores, vr: Tensor, out: Tensor, lse: Tensor, tiling: Tiling, *, fresh: bool = True,
    need_lse: bool = True, consume: Consumer | None = None,
) -> None:
    """The online softmax over every visible tile, into ``out (n, G·Lq, Dv)`` and
    ``lse (n, G·Lq)`` in place: ``fresh`` ones (zeros and ``−inf``) or running results over
    other keys (ring attention), which are merged with. Without ``need_lse`` the rows whose
    keys fit in one tile skip their log-sum-exp (``lse`` is then not to be read).

    ``consume`` (a tiling of :func:`whole_rows`: each tile holds every key its rows may see)
    receives each tile's probabilities, exact since the rows are whole, like
    :func:`probabilities` does in a second pass."""
    dropout = tiling.dropout
    if consume is None and dropout is None and fusable(sb, vr):
        for (q0, q1, k0, k1), i, g, _, _, add in masked(fused_tiling(tiling)):
            r0, r1 = tiling.rows(g, q0, q1)
            out_b, lse_b = sb.fused(r0, r1, k0, k1, add, vr)  # type: ignore[attr-defined]
            if fresh and i <= 0:
                out[:, r0:r1] = out_b
                lse[:, r0:r1] = lse_b
            else:
                merge_(out[:, r0:r1], lse[:, r0:r1], out_b, lse_b)
        return
    assert dropout is None or not tiling.per_entry, "a keep-mask covers every entry"
    for (q0, q1, k0, k1), i, g, es, tile, s in scored(sb, tiling):
        r0, r1 = tiling.rows(g, q0, q1)
        whole = fresh and not need_lse and i < 0  # one tile holds the whole rows
        keep = None if dropout is None else dropout.keep((g, q0, k0), s.shape, s.dtype)
        attend_(
            s, vr[es, k0:k1], out[es, r0:r1], None if whole else lse[es, r0:r1],
            first=fresh and i <= 0, may_be_empty=not tile.full, keep=keep,
        )
        if consume is not None:
            assert fresh and i < 0, "consume needs a tiling of whole rows"
            consume(s, g, (q0, q1, k0, k1), es)  # s: the tile's probabilities, before dropout


def probabilities(sb: TileScores, lse: Tensor, tiling: Tiling, consume: Consumer) -> None:
    """The second pass with the final ``lse (n, G·Lq)``: ``consume(p, g, (q0, q1, k0, k1),
    entries)`` receives the exact probabilities ``p = exp(S − lse) (n, q, k)`` of every
    visible tile."""
    lse_safe = lse.masked_fill(lse == NEG_INF, 0.0).unsqueeze(-1)  # (n, G·Lq, 1)
    for box, _, g, es, _, s in scored(sb, tiling):
        r0, r1 = tiling.rows(g, box[0], box[1])
        consume(s.sub_(lse_safe[es, r0:r1]).exp_(), g, box, es)


def write_weights(weights: Tensor, q_len: int) -> Consumer:
    """A :func:`probabilities` consumer writing each tile into ``weights (n, G·Lq, Lk)``."""

    def consume(p: Tensor, g: int, box: Box, entries: slice) -> None:
        q0, q1, k0, k1 = box
        weights[entries, g * q_len + q0 : g * q_len + q1, k0:k1] = p

    return consume


def backward(
    sb: TileScores,
    dout: Tensor,
    vr: Tensor,
    lse: Tensor,
    row_dot: Tensor | None,
    dv: Tensor,
    tiling: Tiling,
    *,
    dw: Tensor | None = None,
    dbias: Tensor | None = None,
    out: Tensor | None = None,
) -> None:
    """The recomputing backward over every visible tile: ``dv (n, Lk, Dv)`` and ``dbias``
    accumulate in place; score gradients go to ``sb``. ``dout (n, G·Lq, Dv)``, the final
    ``lse (n, G·Lq)``, ``row_dot (n, G·Lq, 1)`` = ``D`` (``None``: ``rowsum(dO ∘ O)`` of the
    final ``out (n, G·Lq, Dv)``); ``dw (n, G·Lq, Lk)`` the gradient of the returned weights.
    Given ``out`` and no ``row_dot``, :func:`fusable` scores do each tile in one fused call
    (which makes ``D`` from ``out`` itself), where nothing but the scores' own gradients is
    asked for."""
    dropout = tiling.dropout
    assert not tiling.per_entry, "TileScores.backward takes tiles of every entry"
    lse_safe = lse.masked_fill(lse == NEG_INF, 0.0).unsqueeze(-1)  # (n, G·Lq, 1)
    if row_dot is None:
        assert out is not None, "backward needs row_dot or out"
        if dropout is None and dw is None and dbias is None and fusable(sb, vr):
            for (q0, q1, k0, k1), _, g, _, _, add in masked(fused_tiling(tiling)):
                r0, r1 = tiling.rows(g, q0, q1)
                sb.fused_grads(  # type: ignore[attr-defined]
                    r0, r1, k0, k1, add, dout[:, r0:r1], out[:, r0:r1], lse_safe[:, r0:r1, 0],
                    vr, dv,
                )
            return
        row_dot = (dout * out).sum(dim=-1, keepdim=True)  # (n, G·Lq, 1)
    vt = vr.transpose(1, 2)  # (n, Dv, Lk)
    work = vr.new_empty(tiling.elements)  # dP of one tile, reused
    for (q0, q1, k0, k1), _, g, _, _, s in scored(sb, tiling):
        r0, r1 = tiling.rows(g, q0, q1)
        p = s.sub_(lse_safe[:, r0:r1]).exp_()  # P; 0 where masked
        keep = None if dropout is None else dropout.keep((g, q0, k0), p.shape, p.dtype)
        ds = tile_grads(
            p, dout[:, r0:r1], vt[:, :, k0:k1], dv[:, k0:k1], row_dot=row_dot[:, r0:r1],
            keep=keep, dw=None if dw is None else dw[:, r0:r1, k0:k1],
            work=work[: p.numel()].view(p.shape),
        )
        if dbias is not None:
            tiling.add_bias_grad(dbias, ds, g, (q0, q1, k0, k1))
        sb.backward(ds, r0, r1, k0, k1)


def attention(
    sb: TileScores, vr: Tensor, tiling: Tiling, weights: bool, need_lse: bool = True,
    consume: Consumer | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A whole call on fresh state: ``out (n, G·Lq, Dv)``, ``lse (n, G·Lq)`` (``None`` unless
    ``need_lse``, ``weights`` or ``consume``) and, with ``weights``, the exact weights
    ``(n, G·Lq, Lk)`` from a second pass; or that second pass hands every tile to
    ``consume`` (a summary of the weights) instead."""
    vis, n = tiling.vis, vr.shape[0]
    rows = vis.heads // tiling.kv_heads * vis.q_len
    out = vr.new_zeros(n, rows, vr.shape[2])
    lse = vr.new_full((n, rows), NEG_INF)
    second = weights or consume is not None
    forward(sb, vr, out, lse, tiling, need_lse=need_lse or second)
    if not second:
        return out, lse if need_lse else None, None
    w = vr.new_zeros(n, rows, vis.kv_len) if weights else None
    probabilities(sb, lse, tiling, consume if w is None else write_weights(w, vis.q_len))
    return out, lse, w


def in_one_pass(
    sb: TileScores, vr: Tensor, rows: Tiling, consume: Callable[..., None], need_lse: bool,
    sinks: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``(out, lse)`` as :func:`attention` gives them, on a tiling of :func:`whole_rows`, each
    tile's exact probabilities handed to ``consume`` as it is made: one pass, no second.

    With attention ``sinks (n, G·Lq)``, a tile's rows are normalised without their sink, so
    ``consume`` also receives each row's :func:`sink_share` (``consume(p, g, box, entries,
    share)``, a :class:`~attnkit.kernels.summaries.Reduction`), and the sinks are merged into
    ``out`` and ``lse`` after the last tile (``lse`` is then returned)."""
    vis, n = rows.vis, vr.shape[0]
    count = vis.heads // rows.kv_heads * vis.q_len
    # each tile of whole rows writes its rows' output; only rows of blocks no tile visits
    # (queries that see no key) need zeros beforehand
    make = vr.new_empty if vis.every_query_sees_a_key else vr.new_zeros
    out = make(n, count, vr.shape[2])  # (n, G·Lq, Dv)
    lse = vr.new_full((n, count), NEG_INF)
    if sinks is None:
        forward(sb, vr, out, lse, rows, need_lse=need_lse, consume=consume)
        return out, lse if need_lse else None

    def with_share(p: Tensor, g: int, box: Box, entries: slice) -> None:
        r0, r1 = rows.rows(g, box[0], box[1])  # the tile's rows, their lse final
        consume(p, g, box, entries, sink_share(lse[entries, r0:r1], sinks[entries, r0:r1]))

    forward(sb, vr, out, lse, rows, consume=with_share)
    merge_(out, lse, None, sinks)
    return out, lse


def gradients(
    sb: TileScores, dout: Tensor, saved: tuple[Tensor, Tensor, Tensor, Tensor | None],
    dweights: Tensor | None, tiling: Tiling, dbias: Tensor | None,
) -> Tensor:
    """The backward of :func:`attention`: returns ``dv``; score gradients go to ``sb``.
    ``saved = (vr, out, lse, weights)``; ``dweights`` the weights' gradient (or ``None``)."""
    vr, out, lse, weights = saved
    row_dot, dw = None, None  # D = rowsum(dO ∘ O), made by backward() where it needs it
    if weights is not None and dweights is not None:
        dw = dweights.reshape(weights.shape).to(weights.dtype)
        row_dot = (dout * out).sum(dim=-1, keepdim=True) + (weights * dw).sum(
            dim=-1, keepdim=True
        )  # (n, G·Lq, 1): + rowsum(W ∘ dW)
    dv = torch.zeros_like(vr)
    backward(sb, dout, vr, lse, row_dot, dv, tiling, dw=dw, dbias=dbias, out=out)
    return dv
