"""How a tile's scores are made: the :class:`~attnkit.kernels.tiling.TileScores` of the block
kernels. :class:`DotScores` are ``scale · q kᵀ`` in the rows layout (chunked, ring's block
step); :class:`ModScores` pass another kind's tiles through a FlexAttention ``score_mod``
(chunked, additive), with its gradient. :mod:`attnkit.kernels.online` walks the tiles.

Shape legend: n = B·Hkv, G = Hq/Hkv, Lq/Lk lengths, D head dim, q/k a tile's rows/keys.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.kernels.block_mask import index_grid
from attnkit.kernels.online import add_product_
from attnkit.kernels.plan import Scoring
from attnkit.kernels.tiling import ALL, TileScores, Tiling
from attnkit.kernels.visibility import NEG_INF


class DotScores:
    """Tiles ``scale · q kᵀ`` of the rows layout (``qs (n, G·Lq, D)``, ``kr (n, Lk, D)``), and
    their gradients accumulated into ``grads = (dqs, dk)`` when given."""

    def __init__(
        self, qs: Tensor, kr: Tensor, tiling: Tiling, grads: tuple[Tensor, Tensor] | None = None,
        scale: float = 1.0,
    ) -> None:
        self.qs, self.kr, self.kt = qs, kr, kr.transpose(1, 2)  # kt (n, D, Lk)
        self._elements = tiling.elements
        self._work: Tensor | None = None  # reused by every tile; fused tiles make no scores
        self.grads, self.scale = grads, scale

    def scores(self, r0: int, r1: int, k0: int, k1: int, add: Tensor | None = None,
               entries: slice = ALL) -> Tensor:
        if self._work is None:
            self._work = self.qs.new_empty(self._elements)
        q, kt = self.qs[entries, r0:r1], self.kt[entries, :, k0:k1]
        n = q.shape[0]
        out = self._work[: n * (r1 - r0) * (k1 - k0)].view(n, r1 - r0, k1 - k0)
        if add is None and self.scale == 1.0:
            return torch.bmm(q, kt, out=out)  # (n, q, k)
        base, beta = (out, 0.0) if add is None else (add.expand(out.shape), 1.0)
        return torch.baddbmm(base, q, kt, beta=beta, alpha=self.scale, out=out)  # + add

    def backward(self, ds: Tensor, r0: int, r1: int, k0: int, k1: int) -> None:
        dqs, dk = self.grads  # type: ignore[misc]
        add_product_(dqs[:, r0:r1], ds, self.kr[:, k0:k1], alpha=self.scale)
        add_product_(dk[:, k0:k1], ds.transpose(1, 2), self.qs[:, r0:r1], alpha=self.scale)

    def fuses(self, vr: Tensor) -> bool:
        """Whether PyTorch's fused CPU FlashAttention kernel can do the tiles with values
        ``vr`` (:func:`~attnkit.kernels.tiling.fusable`, :func:`flash_fuses`)."""
        return flash_fuses(self.qs, self.kr, vr)

    def fused(
        self, r0: int, r1: int, k0: int, k1: int, add: Tensor | None, vr: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One tile of the forward pass on its own (:func:`flash_tile`): ``(out_b (n, q, Dv),
        lse_b (n, q))``."""
        return flash_tile(self.qs[:, r0:r1], self.kr[:, k0:k1], vr[:, k0:k1], add, self.scale)

    def fused_grads(
        self, r0: int, r1: int, k0: int, k1: int, add: Tensor | None, dout: Tensor, out: Tensor,
        lse: Tensor, vr: Tensor, dv: Tensor,
    ) -> None:
        """FlashAttention-2's backward of one tile by PyTorch's fused CPU kernel, its
        gradients added into ``grads`` and ``dv (n, Lk, Dv)``: ``dout``/``out (n, q, Dv)``
        the rows' final output and its gradient, ``lse (n, q)`` their final log-sum-exp
        (0 for empty rows), ``add (n|1, q, k)`` the tile's mask (or ``None``). The kernel
        recomputes the tile's probabilities from ``lse`` and ``D = rowsum(dO ∘ O)`` from
        ``out``, so a tile of part of a row gets exactly its share."""
        dqs, dk = self.grads  # type: ignore[misc]
        k, v = self.kr[:, k0:k1], vr[:, k0:k1]  # (n, k, D|Dv)
        gq, gk, gv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout.unsqueeze(0), self.qs[:, r0:r1].unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
            out.unsqueeze(0), lse.unsqueeze(0), 0.0, False,
            attn_mask=None if add is None else add.unsqueeze(0), scale=self.scale,
        )  # (1, n, q|k, D|Dv)
        dqs[:, r0:r1].add_(gq[0])
        dk[:, k0:k1].add_(gk[0])
        dv[:, k0:k1].add_(gv[0])


def flash_fuses(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether PyTorch's fused CPU FlashAttention kernel can take ``q (…, D)``, ``k (…, D)``,
    ``v (…, Dv)``: on CPU, float32/float64, values as wide as keys, and each row of queries,
    keys and values contiguous (the kernel reads them so: a transposed ``q`` would give
    garbage)."""
    return (q.device.type == "cpu" and v.shape[-1] == q.shape[-1]
            and q.dtype in (torch.float32, torch.float64)
            and q.stride(-1) == k.stride(-1) == v.stride(-1) == 1)


def flash_tile(
    q: Tensor, k: Tensor, v: Tensor, add: Tensor | None, scale: float
) -> tuple[Tensor, Tensor]:
    """Softmax attention of ``q (n, q, D)`` over ``k (n, k, D)``, ``v (n, k, Dv)`` with the
    additive mask ``add (n|1, q, k)`` (or ``None``) by PyTorch's fused CPU kernel (when
    :func:`flash_fuses`): ``(out (n, q, Dv), lse (n, q))``, lse ``−inf`` and out 0 where
    ``add`` hides every key of a row (the kernel leaves 0 in both)."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
        attn_mask=None if add is None else add.unsqueeze(0), scale=scale,
    )  # (1, n, q, Dv), (1, n, q)
    lse = lse[0]
    if add is not None:
        lse = lse.masked_fill((add.amax(dim=-1) == NEG_INF).expand(lse.shape), NEG_INF)
    return out[0], lse


def modded(inner: TileScores, score: Scoring, tiling: Tiling, grads: bool) -> TileScores:
    """``inner``'s tiles through the plan's ``score_mod``, if it has one."""
    return inner if score.mod is None else ModScores(inner, score, tiling, grads)


class ModScores:
    """The tiles of ``inner`` passed through a FlexAttention ``score_mod(score, b, h, q_idx,
    kv_idx)`` (He et al. 2024). With ``grads``, the backward pass chains ``score_mod``'s
    derivative (autograd on the recomputed tile) into ``inner`` and sums the gradients of the
    tensors ``score_mod`` reads (``score.mod_leaves``) into ``leaf_grads``."""

    def __init__(self, inner: TileScores, score: Scoring, tiling: Tiling, grads: bool) -> None:
        assert score.mod is not None
        self.inner, self.mod, self.tiling, self.leaves = inner, score.mod, tiling, score.mod_leaves
        self.grads = grads
        self.leaf_grads: list[Tensor | None] = [None] * len(self.leaves)
        self._saved: tuple[Tensor, Tensor] | None = None

    def scores(self, r0: int, r1: int, k0: int, k1: int, add: Tensor | None = None,
               entries: slice = ALL) -> Tensor:
        t = self.tiling
        g, q0 = divmod(r0, t.vis.q_len)
        raw = self.inner.scores(r0, r1, k0, k1, entries=entries)  # (n, q, k)
        rows = torch.arange(q0, q0 + r1 - r0, device=raw.device).unsqueeze(-1)  # (q, 1)
        cols = torch.arange(k0, k1, device=raw.device)  # (k,)
        if entries == ALL:
            raw4 = raw.view(t.vis.batch, t.kv_heads, r1 - r0, k1 - k0)  # (B, Hkv, q, k)
            b, h, qi, ki = index_grid(t.vis.batch, t.kv_heads, rows, cols)
        else:  # one entry: batch item b0, key/value head h0
            b0, h0 = divmod(entries.start, t.kv_heads)
            raw4 = raw.view(1, 1, r1 - r0, k1 - k0)  # (1, 1, q, k)
            b, h, qi, ki = index_grid(1, 1, rows, cols)
            b, h = b + b0, h + h0
        h = h * t.group + g  # the query heads of group g
        if not self.grads:
            with torch.no_grad():
                raw4.copy_(self.mod(raw4, b, h, qi, ki))  # the caller works in place
        else:
            leaf = raw4.clone().requires_grad_()
            with torch.enable_grad():
                out = self.mod(leaf, b, h, qi, ki)
            self._saved = (leaf, out)
            raw4.copy_(out.detach())
        return raw if add is None else raw.add_(add)  # masks after the score_mod

    def backward(self, ds: Tensor, r0: int, r1: int, k0: int, k1: int) -> None:
        assert self._saved is not None
        leaf, out = self._saved
        self._saved = None
        wanted = (leaf, *self.leaves)
        cotangent = ds.view(leaf.shape).sum_to_size(out.shape)  # out may broadcast
        got = torch.autograd.grad(out, wanted, cotangent, allow_unused=True)
        for i, grad in enumerate(got[1:]):
            if grad is not None:
                prev = self.leaf_grads[i]
                self.leaf_grads[i] = grad if prev is None else prev + grad
        if got[0] is not None:
            self.inner.backward(got[0].reshape(ds.shape), r0, r1, k0, k1)
