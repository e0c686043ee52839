"""Positional information: sinusoidal embeddings, rotary (RoPE) and ALiBi (FORMULAS.md).

Pure tensor functions, plus three small *schemes* that a layer takes as an injected part
(``MultiHeadAttention(positions="rope")``), so no layer grows a flag per method. A scheme has:

- ``rotate(q, k, q_start, k_start) -> (q, k)`` on ``(B, H, L, D)`` tensors, where ``*_start``
  is the absolute position of the first row (non-zero while decoding with a KV cache);
- ``bias(num_heads, q_len, kv_len, device) -> Tensor | None``, an additive ``(H, Lq, Lk)``
  score bias (queries bottom-right aligned, as everywhere in attnkit);
- ``bias_at(distances) -> Tensor | None``, the same bias for explicit query−key distances
  ``(B, H, Lq, Lk)`` (keys of an evicting KV cache, no longer at consecutive positions);
  ``has_bias`` says whether a scheme has one at all.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnkit.masks import causal, query_positions


def sinusoidal(
    length: int, dim: int, *, start: int = 0, base: float = 10000.0, device=None
) -> Tensor:
    """Vaswani et al. 2017: ``PE[p, 2i] = sin(p / base^(2i/d))``, ``PE[p, 2i+1] = cos(...)``.

    Returns ``(length, dim)`` float32 for positions ``start .. start + length - 1``.
    Raises ``ValueError`` for an odd ``dim``.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal: dim must be even, got {dim}")
    position = torch.arange(start, start + length, device=device, dtype=torch.float32)
    inv_freq = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    angles = position.unsqueeze(-1) * inv_freq  # (L, dim/2)
    out = torch.empty(length, dim, device=device)
    out[:, 0::2] = torch.sin(angles)
    out[:, 1::2] = torch.cos(angles)
    return out


def rotary(x: Tensor, positions: Tensor, *, base: float = 10000.0) -> Tensor:
    """RoPE (Su et al. 2021): rotate each pair ``(x_{2i}, x_{2i+1})`` at position ``m`` by
    ``m θ_i``, ``θ_i = base^(−2i/d)``.

    ``x (..., L, D)`` with even ``D``; ``positions (L,)``. Returns a tensor like ``x``.
    Raises ``ValueError`` for an odd ``D`` or a length mismatch.
    """
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"rotary: the head dim must be even, got x of shape {tuple(x.shape)}")
    if positions.shape != (x.shape[-2],):
        raise ValueError(
            f"rotary: positions must have shape ({x.shape[-2]},), got {tuple(positions.shape)}"
        )
    precise = torch.promote_types(x.dtype, torch.float32)
    theta = base ** (-torch.arange(0, d, 2, device=x.device, dtype=precise) / d)
    angles = positions.to(device=x.device, dtype=precise).unsqueeze(-1) * theta  # (L, D/2)
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    pairs = x.unflatten(-1, (d // 2, 2))  # (..., L, D/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2)  # (..., L, D)


def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi slopes (Press et al. 2022): ``m_h = 2^(−8h/H)`` for ``h = 1..H``; when ``H`` is not a
    power of two, the slopes of the nearest lower power of two, then every other slope of the
    next power of two. Returns ``(H,)`` float32."""

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    if num_heads < 1:
        raise ValueError(f"alibi_slopes: num_heads must be ≥ 1, got {num_heads}")
    lower = 2 ** math.floor(math.log2(num_heads))
    slopes = geometric(lower) + geometric(2 * lower)[0::2][: num_heads - lower]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(num_heads: int, q_len: int, kv_len: int, *, device=None) -> Tensor:
    """``−m_h · |i − j|`` for query position ``i`` (bottom-right aligned) and key ``j``.

    Returns ``(H, Lq, Lk)`` float32. For a causal model (``j ≤ i``) this is the paper's
    ``−m_h (i − j)``; keys after the query get the mirrored penalty (for encoders).
    """
    i = query_positions(q_len, kv_len, device).unsqueeze(-1)  # (Lq, 1)
    j = torch.arange(kv_len, device=device).unsqueeze(0)  # (1, Lk)
    return alibi_at((i - j).expand(num_heads, -1, -1))  # (H, Lq, Lk)


def alibi_at(distances: Tensor) -> Tensor:
    """``−m_h · |d|`` for query−key distances ``d (..., H, Lq, Lk)`` (integers); float32, same
    shape."""
    slopes = alibi_slopes(distances.shape[-3]).to(distances.device)
    return -slopes.reshape(-1, 1, 1) * distances.abs().to(torch.float32)  # (..., H, Lq, Lk)


def relative_at(q: Tensor, embeddings: Tensor, distances: Tensor) -> Tensor:
    """Relative position scores for explicit query−key distances (keys of an evicting KV
    cache): ``S_rel[b, h, i, j] = q[b, h, i] · Eᵣ[h, R − 1 − min(d_ij, R − 1)]``, where row
    ``r`` of ``embeddings (H, R, D)`` embeds the distance ``R − 1 − r`` (the layout of
    :func:`relative_skew`'s table; farther keys share row 0, as Shaw et al. clip). Keys after
    their query (``d < 0``) get row ``R − 1`` (finite, to be masked by the caller).

    Computes ``Q Eᵣᵀ (B, H, Lq, R)`` and gathers from it: no ``(Lq, Lk, D)`` tensor.

    Args:
        q: ``(B, H, Lq, D)``; embeddings: ``(H, R, D)``, same dtype; distances:
            ``(B, H, Lq, Lk)`` integer.

    Returns:
        ``(B, H, Lq, Lk)`` in ``q``'s dtype.

    Raises:
        ValueError: shapes that do not fit together.
    """
    if q.dim() != 4 or embeddings.dim() != 3 or distances.dim() != 4 or (
        embeddings.shape[0] != q.shape[1] or embeddings.shape[2] != q.shape[3]
    ) or distances.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"relative_at: need q (B, H, Lq, D), embeddings (H, R, D), distances "
            f"(B, H, Lq, Lk); got {tuple(q.shape)}, {tuple(embeddings.shape)}, "
            f"{tuple(distances.shape)}"
        )
    far = embeddings.shape[1] - 1
    rel = torch.matmul(q, embeddings.transpose(-1, -2))  # (B, H, Lq, R)
    return rel.gather(-1, far - distances.clamp(0, far))  # (B, H, Lq, Lk)


def relative_skew(q: Tensor, embeddings: Tensor, *, zero_future: bool = True) -> Tensor:
    """Relative position scores by skewing (Huang et al. 2018): ``S_rel = skew(Q Eᵣᵀ)``.

    ``embeddings`` row ``r`` embeds the distance ``r − (Lk − 1)``, i.e. the rows are distances
    ``−(Lk−1) .. 0``. Queries sit bottom-right (query ``i`` at key position
    ``p_i = Lk − Lq + i``, as with a KV cache), and the result is
    ``S_rel[b, h, i, j] = q[b, h, i] · Eᵣ[h, j − p_i + Lk − 1]`` for ``j ≤ p_i``. Skew: pad one
    zero column on the left, view ``(Lq, Lk+1)`` as ``(Lk+1, Lq)``, drop the first row, view as
    ``(Lq, Lk)`` (with ``Lq == Lk`` the paper's recipe; the last two steps are one strided view
    here, with no copy). Only ``(Lq, Lk)`` tensors are made, never ``(Lq, Lk, D)``.

    Add ``S_rel / √D`` to the scaled dot-product scores to get ``(QKᵀ + S_rel) / √D``.

    Args:
        q: queries ``(B, H, Lq, D)``.
        embeddings: ``(H, Lk, D)`` (one table per head) or ``(Lk, D)`` (shared), same dtype
            and device as ``q``.
        zero_future: set the keys after each query (``j > p_i``) to 0. With ``False`` they
            hold the skew's spill-over from the next row (finite, meaningless), which saves a
            pass over ``(B, H, Lq, Lk)``: only for callers that mask them (``causal=True``).

    Returns:
        ``(B, H, Lq, Lk)`` in ``q``'s dtype (a strided view when ``zero_future=False``).

    Raises:
        TypeError: non-tensors, or dtypes that differ.
        ValueError: wrong ranks, mismatched heads or dims, ``Lq > Lk``, devices that differ.
    """
    if not isinstance(q, Tensor) or not isinstance(embeddings, Tensor):
        raise TypeError(
            f"relative_skew: q and embeddings must be tensors, got {type(q).__name__} and "
            f"{type(embeddings).__name__}"
        )
    if q.dim() != 4 or embeddings.dim() not in (2, 3):
        raise ValueError(
            f"relative_skew: q must be (B, H, Lq, D) and embeddings (H, Lk, D) or (Lk, D), got "
            f"q {tuple(q.shape)} and embeddings {tuple(embeddings.shape)}"
        )
    if q.dtype != embeddings.dtype:
        raise TypeError(f"relative_skew: dtypes differ: q {q.dtype}, embeddings {embeddings.dtype}")
    if q.device != embeddings.device:
        raise ValueError(
            f"relative_skew: q is on {q.device} but embeddings are on {embeddings.device}"
        )
    table = embeddings if embeddings.dim() == 3 else embeddings.unsqueeze(0)  # (H|1, Lk, D)
    b, h, lq, d = q.shape
    lk = table.shape[1]
    if table.shape[2] != d or table.shape[0] not in (1, h) or lq > lk:
        raise ValueError(
            f"relative_skew: need embeddings (H={h} or 1, Lk ≥ Lq={lq}, D={d}), got q "
            f"{tuple(q.shape)} and embeddings {tuple(embeddings.shape)}"
        )
    rel = torch.matmul(q, table.transpose(-1, -2))  # (B, H, Lq, Lk): column r = distance r-(Lk-1)
    padded = torch.nn.functional.pad(rel, (1, 0))  # (B, H, Lq, Lk + 1), contiguous
    # viewed as (B, H, Lk + 1, Lq), without its first row (Lq elements), viewed as (Lq, Lk)
    # (slices and views only, so torch.compile traces it):
    flat = padded.flatten(-2)[..., lq : lq + lq * lk]  # (B, H, Lq·Lk)
    skewed = flat.view(b, h, lq, lk)  # (B, H, Lq, Lk): [i, j] = rel[i, Lq - 1 + j - i]
    if not zero_future:
        return skewed
    future = ~causal(lq, lk, device=q.device)  # (Lq, Lk)
    return skewed.masked_fill(future, 0.0)


class NoPositions:
    """No positional information inside attention (positions added to embeddings, or none)."""

    name = "none"
    has_bias = False

    def rotate(self, q: Tensor, k: Tensor, q_start: int, k_start: int) -> tuple[Tensor, Tensor]:
        return q, k

    def bias(self, num_heads: int, q_len: int, kv_len: int, device) -> Tensor | None:
        return None

    def bias_at(self, distances: Tensor) -> Tensor | None:
        return None


class Rotary(NoPositions):
    """Rotary positions applied to queries and keys before scoring."""

    name = "rope"

    def __init__(self, base: float = 10000.0) -> None:
        self.base = base

    def rotate(self, q: Tensor, k: Tensor, q_start: int, k_start: int) -> tuple[Tensor, Tensor]:
        q_pos = torch.arange(q_start, q_start + q.shape[-2], device=q.device)
        k_pos = torch.arange(k_start, k_start + k.shape[-2], device=k.device)
        return rotary(q, q_pos, base=self.base), rotary(k, k_pos, base=self.base)


class ALiBi(NoPositions):
    """Linear distance penalties added to the scores."""

    name = "alibi"
    has_bias = True

    def bias(self, num_heads: int, q_len: int, kv_len: int, device) -> Tensor | None:
        return alibi_bias(num_heads, q_len, kv_len, device=device)

    def bias_at(self, distances: Tensor) -> Tensor | None:
        return alibi_at(distances)


SCHEMES = {"none": NoPositions, "rope": Rotary, "alibi": ALiBi}


def scheme(positions: str | NoPositions | None) -> NoPositions:
    """Resolve ``"none"``/``"rope"``/``"alibi"`` (or a scheme object) to a scheme object."""
    if positions is None:
        return NoPositions()
    if isinstance(positions, NoPositions):
        return positions
    if positions not in SCHEMES:
        raise ValueError(f"positions must be one of {sorted(SCHEMES)}, got {positions!r}")
    return SCHEMES[positions]()
