"""Normalizers: turn scores into attention weights (FORMULAS.md, "Normalizers").

Every function takes ``scores (..., Lk)`` and ``allowed``, a bool tensor broadcastable to
``scores`` (True = may attend) or ``None``, and returns weights of the scores' shape. Scores
of ``-inf`` count as not allowed. A row with no allowed key gets all-zero weights, never NaN.

Use one in :func:`attnkit.attention` by name, or with parameters through
:class:`Normalizer`::

    attnkit.attention(q, k, v, normalize="sparsemax")
    attnkit.attention(q, k, v, normalize=attnkit.Normalizer("gumbel_softmax", tau=0.5))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

_NEG_INF = float("-inf")


def _allowed(scores: Tensor, allowed: Tensor | None) -> Tensor:
    """``allowed`` combined with the finite-score positions, broadcast to ``scores``."""
    finite = scores > _NEG_INF
    return finite if allowed is None else finite & allowed


def softmax(scores: Tensor, allowed: Tensor | None = None) -> Tensor:
    """``exp(s_j) / Σ_{j allowed} exp(s_j)`` with the max subtracted first."""
    if scores.shape[-1] == 0:
        return torch.zeros_like(scores)  # no keys: nothing to weigh
    s = scores if allowed is None else scores.masked_fill(~allowed, _NEG_INF)
    row_max = s.amax(dim=-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(s - row_max)
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def softmax_with_sinks(
    scores: Tensor, allowed: Tensor | None = None, *, sinks: Tensor
) -> Tensor:
    """Softmax with a logit ``σ`` of its own in the denominator, one per query head: the
    learned "attention sinks" of gpt-oss (OpenAI 2025; transformers' ``s_aux``), and with
    ``σ = 0`` Miller's (2023) ``softmax₁``:

        p_j = exp(s_j) / (exp(σ) + Σ_{j allowed} exp(s_j))

    The weights of a row sum to less than 1: the rest goes to a key that is not there and adds
    nothing to the output. A row with no allowed key gets all-zero weights. The gradient flows
    to ``sinks`` too. This is the definition (the ``reference`` kernel runs it); the
    ``chunked`` and ``local`` kernels get the same from each row's log-sum-exp
    (:func:`attnkit.kernels.online.merge_`).

    Args:
        sinks: one logit per query head, ``(Hq,)`` (for scores ``(..., Hq, Lq, Lk)``), or a
            tensor broadcastable to ``scores.shape[:-1]``.

    Raises:
        TypeError: ``sinks`` that is not a floating-point tensor.
        ValueError: ``sinks`` that does not broadcast to the scores' rows.
    """
    sink = sink_rows(sinks, scores.shape[:-1]).to(scores.dtype)  # (..., Hq, Lq)
    s = scores if allowed is None else scores.masked_fill(~allowed, _NEG_INF)
    top = torch.maximum(s.amax(dim=-1), sink) if s.shape[-1] else sink  # (..., Lq)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach().unsqueeze(-1)
    e = torch.exp(s - top)  # (..., Lq, Lk)
    total = e.sum(dim=-1, keepdim=True) + torch.exp(sink.unsqueeze(-1) - top)  # (..., Lq, 1)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def sink_rows(sinks: Tensor, rows: tuple[int, ...] | torch.Size) -> Tensor:
    """``sinks`` of :func:`softmax_with_sinks` broadcast to the scores' ``rows`` (a view):
    ``(Hq,)`` is one logit per query head of rows ``(..., Hq, Lq)``.

    Raises:
        TypeError: ``sinks`` that is not a floating-point tensor.
        ValueError: ``sinks`` that does not broadcast to ``rows``.
    """
    if not isinstance(sinks, Tensor) or not sinks.is_floating_point():
        got = sinks.dtype if isinstance(sinks, Tensor) else type(sinks).__name__
        raise TypeError(f"normalize 'softmax_with_sinks': sinks must be a float tensor, got {got}")
    sink = sinks.view(-1, 1) if sinks.dim() == 1 and len(rows) >= 2 else sinks  # (Hq, 1)
    try:
        return torch.broadcast_to(sink, rows)  # (..., Hq, Lq)
    except RuntimeError:
        heads = f" (one logit per query head: ({rows[-2]},))" if len(rows) >= 2 else ""
        raise ValueError(
            f"normalize 'softmax_with_sinks': sinks of shape {tuple(sinks.shape)} do not "
            f"broadcast to the scores' rows {tuple(rows)}{heads}"
        ) from None


def sparsemax(scores: Tensor, allowed: Tensor | None = None) -> Tensor:
    """Sparsemax (Martins & Astudillo 2016): the Euclidean projection onto the simplex.

    Sort ``z`` descending, ``k(z) = max{k : 1 + k z_(k) > Σ_{j≤k} z_(j)}``,
    ``τ = (Σ_{j≤k(z)} z_(j) − 1) / k(z)``, ``p = max(z − τ, 0)``.
    """
    if scores.shape[-1] == 0:
        return torch.zeros_like(scores)  # no keys: nothing to weigh
    ok = _allowed(scores, allowed)
    z = scores.masked_fill(~ok, _NEG_INF)
    z_sorted, _ = torch.sort(z, dim=-1, descending=True)
    valid_sorted = z_sorted > _NEG_INF  # allowed entries come first after sorting
    z_sorted = z_sorted.masked_fill(~valid_sorted, 0.0)
    ks = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    cumulative = z_sorted.cumsum(dim=-1)
    support = (1 + ks * z_sorted > cumulative) & valid_sorted
    k_z = support.sum(dim=-1, keepdim=True)  # (..., 1), 0 for empty rows
    k_safe = k_z.clamp_min(1)
    tau = (cumulative.gather(-1, k_safe - 1) - 1) / k_safe.to(z.dtype)
    p = torch.clamp(scores.masked_fill(~ok, 0.0) - tau, min=0.0)
    return p.masked_fill(~ok | (k_z == 0), 0.0)


def hardmax(scores: Tensor, allowed: Tensor | None = None) -> Tensor:
    """One-hot at the argmax of the allowed scores (hard attention at inference)."""
    if scores.shape[-1] == 0:
        return torch.zeros_like(scores)  # no keys: nothing to weigh
    ok = _allowed(scores, allowed)
    index = scores.masked_fill(~ok, _NEG_INF).argmax(dim=-1, keepdim=True)
    return _one_hot(index, scores, ok)


def gumbel_softmax(
    scores: Tensor,
    allowed: Tensor | None = None,
    *,
    tau: float = 1.0,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Straight-through Gumbel-softmax (Jang et al. 2017).

    ``y = softmax((log α + g) / τ)`` with ``g ~ Gumbel(0, 1)`` (or the given ``noise``, of the
    scores' shape); the forward value is ``one_hot(argmax y)``, the gradient that of ``y``.
    ``log α`` differs from the scores by a per-row constant, which changes neither.
    """
    if scores.shape[-1] == 0:
        return torch.zeros_like(scores)  # no keys: nothing to weigh
    ok = _allowed(scores, allowed)
    if noise is None:
        uniform = torch.rand(
            scores.shape, dtype=scores.dtype, device=scores.device, generator=generator
        )
        noise = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
    soft = softmax((scores.masked_fill(~ok, 0.0) + noise) / tau, ok)
    hard = _one_hot(soft.argmax(dim=-1, keepdim=True), scores, ok)
    return hard - soft.detach() + soft


def multinoulli(
    scores: Tensor, allowed: Tensor | None = None, *, generator: torch.Generator | None = None
) -> Tensor:
    """One-hot of a position sampled from ``softmax(scores)`` (Xu et al. 2015's hard attention).

    Carries no gradient: learn the scores with REINFORCE on ``log α`` of the sample.
    """
    ok = _allowed(scores, allowed)
    probs = softmax(scores.detach(), ok)
    flat = probs.reshape(-1, probs.shape[-1])  # (rows, Lk)
    has_key = flat.sum(dim=-1, keepdim=True) > 0
    safe = torch.where(has_key, flat, torch.ones_like(flat))
    index = torch.multinomial(safe, 1, generator=generator).reshape(*probs.shape[:-1], 1)
    return _one_hot(index, scores, ok)


def local_p(
    scores: Tensor, allowed: Tensor | None = None, *, centers: Tensor, sigma: float
) -> Tensor:
    """Luong et al. 2015's local-p weights: ``softmax(s)_j · exp(−(j − p_t)² / (2σ²))``.

    ``centers`` holds the predicted positions ``p_t``, broadcastable to ``scores.shape[:-1]``
    (for example ``(B, 1, Lq)``); the softmax runs over ``allowed`` (the window
    ``|j − p_t| ≤ D``, built with :func:`attnkit.masks.around`).
    """
    positions = torch.arange(scores.shape[-1], device=scores.device, dtype=scores.dtype)
    distance = positions - centers.to(scores.dtype).unsqueeze(-1)  # (..., Lq, Lk)
    return softmax(scores, allowed) * torch.exp(-(distance**2) / (2.0 * sigma**2))


def _one_hot(index: Tensor, like: Tensor, ok: Tensor) -> Tensor:
    """Float one-hot of ``index (..., 1)`` in ``like``'s shape, zero on rows with nothing ok."""
    hot = torch.zeros_like(like).scatter(-1, index, 1.0)
    row_ok = ok.expand_as(like).any(dim=-1, keepdim=True)
    return hot * row_ok


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormalizerInfo:
    fn: Callable[..., Tensor]
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


NORMALIZERS: dict[str, NormalizerInfo] = {
    "softmax": NormalizerInfo(softmax),
    "softmax_with_sinks": NormalizerInfo(softmax_with_sinks, required=("sinks",)),
    "sparsemax": NormalizerInfo(sparsemax),
    "hardmax": NormalizerInfo(hardmax),
    "gumbel_softmax": NormalizerInfo(gumbel_softmax, optional=("tau", "noise", "generator")),
    "multinoulli": NormalizerInfo(multinoulli, optional=("generator",)),
    "local_p": NormalizerInfo(local_p, required=("centers", "sigma")),
}


class Normalizer:
    """A normalizer name bundled with its parameters, for :func:`attnkit.attention`.

    Raises:
        ValueError: unknown name, missing or unexpected parameters, ``tau``/``sigma`` ≤ 0.
    """

    def __init__(self, name: str, /, **params: Any) -> None:
        info = lookup(name)
        missing = [p for p in info.required if p not in params]
        unknown = [p for p in params if p not in info.required + info.optional]
        if missing or unknown:
            raise ValueError(
                f"normalize {name!r} takes parameters {list(info.required + info.optional)}; "
                f"missing {missing}, unexpected {unknown}"
            )
        for positive in ("tau", "sigma"):
            if positive in params and not float(params[positive]) > 0:
                raise ValueError(
                    f"normalize {name!r}: {positive} must be > 0, got {params[positive]}"
                )
        self.name = name
        self.params = params

    def __repr__(self) -> str:
        return f"Normalizer({self.name!r})"


def lookup(name: str) -> NormalizerInfo:
    """The registry entry for ``name``. Raises ``ValueError`` naming the known normalizers."""
    if not isinstance(name, str) or name not in NORMALIZERS:
        raise ValueError(
            f"normalize must be one of {sorted(NORMALIZERS)} or a Normalizer, got {name!r}"
        )
    return NORMALIZERS[name]


def resolve(normalize: str | Normalizer) -> tuple[str, Callable[[Tensor, Tensor | None], Tensor]]:
    """Turn the user's ``normalize`` into ``(name, fn(scores, allowed))``."""
    if isinstance(normalize, Normalizer):
        name, params = normalize.name, normalize.params
    else:
        info = lookup(normalize)
        if info.required:
            raise ValueError(
                f"normalize {normalize!r} needs parameters {list(info.required)}: "
                f"pass normalize=attnkit.Normalizer({normalize!r}, ...)"
            )
        name, params = normalize, {}
    fn = NORMALIZERS[name].fn

    def call(scores: Tensor, allowed: Tensor | None) -> Tensor:
        return fn(scores, allowed, **params)

    return name, call
