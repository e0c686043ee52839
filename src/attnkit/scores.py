"""Score functions: how well each query matches each key (FORMULAS.md, "Scores").

Every function takes ``q (B, H, Lq, Dq)`` and ``k (B, H, Lk, Dk)`` (the same number of heads)
and returns ``scores (B, H, Lq, Lk)``. Parametrised scores take their parameters explicitly;
the layers own them as ``nn.Parameter``. Weight matrices follow the formulas' orientation,
which is also ``nn.Linear.weight``'s: ``W q`` with ``W (A, Dq)``.

To use a score in :func:`attnkit.attention`, pass its name (parameter-free scores) or a
:class:`Score`, which bundles the name with the parameters::

    attnkit.attention(q, k, v, score="dot")
    attnkit.attention(q, k, v, score=attnkit.Score("general", weight=W))

A new score is one function here and one :data:`SCORES` entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.kernels.plan import AdditiveForm, DotForm, Scoring, unchanged


def dot(q: Tensor, k: Tensor) -> Tensor:
    """``qᵀk`` (Luong et al. 2015)."""
    return torch.matmul(q, k.transpose(-2, -1))


def scaled_dot(q: Tensor, k: Tensor, scale: float | None = None) -> Tensor:
    """``qᵀk / √d`` (Vaswani et al. 2017); ``scale`` replaces ``1/√d`` when given."""
    return dot(q, k) * (q.shape[-1] ** -0.5 if scale is None else scale)


def general(q: Tensor, k: Tensor, weight: Tensor) -> Tensor:
    """``qᵀ W k`` (Luong et al. 2015). ``weight``: ``(Dq, Dk)`` or per head ``(H, Dq, Dk)``."""
    return dot(torch.matmul(q, weight), k)


def additive(
    q: Tensor, k: Tensor, w_q: Tensor, w_k: Tensor, v: Tensor, bias: Tensor | None = None
) -> Tensor:
    """``vᵀ tanh(W q + U k [+ b])`` (Bahdanau et al. 2015).

    ``w_q (A, Dq)``, ``w_k (A, Dk)``, ``v (A,)``, ``bias (A,)``. Materialises
    ``(B, H, Lq, Lk, A)``; the ``additive`` kernel computes the same in chunks of keys.
    """
    qa = torch.matmul(q, w_q.transpose(0, 1))  # (B, H, Lq, A)
    ka = torch.matmul(k, w_k.transpose(0, 1))  # (B, H, Lk, A)
    hidden = qa.unsqueeze(-2) + ka.unsqueeze(-3)  # (B, H, Lq, Lk, A)
    if bias is not None:
        hidden = hidden + bias
    return torch.matmul(torch.tanh(hidden), v)  # (B, H, Lq, Lk)


def concat(q: Tensor, k: Tensor, weight: Tensor, v: Tensor) -> Tensor:
    """``vᵀ tanh(W [q; k])`` (Luong et al. 2015). ``weight (A, Dq + Dk)``, ``v (A,)``.

    ``W [q; k] = W[:, :Dq] q + W[:, Dq:] k``, so this is :func:`additive` with ``W`` split.
    """
    dq = q.shape[-1]
    return additive(q, k, weight[:, :dq], weight[:, dq:], v)


def cosine(q: Tensor, k: Tensor, tau: float = 1.0, eps: float = 1e-8) -> Tensor:
    """``τ · qᵀk / (‖q‖‖k‖)``; zero vectors score 0."""
    return dot(_unit(q, eps), _unit(k, eps)) * tau


def location(q: Tensor, k: Tensor, weight: Tensor) -> Tensor:
    """``W h_t`` (Luong et al. 2015's location score): ignores the keys' content.

    ``weight (max_Lk, Dq)``; the first ``Lk`` rows score the ``Lk`` key positions.
    """
    lk = k.shape[-2]
    if weight.shape[0] < lk:
        raise ValueError(
            f"score 'location': weight has {weight.shape[0]} rows but there are {lk} keys"
        )
    return torch.matmul(q, weight[:lk].transpose(0, 1))  # (B, H, Lq, Lk)


def location_aware(
    q: Tensor,
    k: Tensor,
    w_q: Tensor,
    w_f: Tensor,
    v: Tensor,
    features: Tensor,
    w_k: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """``wᵀ tanh(W s_{i-1} + V h_j + U f_ij + b)`` (Chorowski et al. 2015, location-aware).

    ``q`` holds the decoder states ``s_{i-1}`` ``(B, H, Lq, Dq)``, ``k`` the encoder states
    ``h_j`` ``(B, H, Lk, Dk)``; ``features`` are the location features ``f_i = F * α_{i-1}``
    (the previous alignment convolved with ``C`` filters) ``(B|1, H|1, Lq, Lk, C)``.
    Parameters: ``w_q`` = W ``(A, Dq)``, ``w_k`` = V ``(A, Dk)``, ``w_f`` = U ``(A, C)``,
    ``v`` = w ``(A,)``, ``bias`` = b ``(A,)``. Without ``w_k`` the keys are taken as already
    projected (``k`` = ``V h_j``, ``Dk == A``): a decoder then projects them once per utterance
    instead of at every step. ``U f_ij`` depends on both ``i`` and ``j``, so it enters inside
    the ``tanh``, per ``(i, j)`` pair. Materialises ``(B, H, Lq, Lk, A)``.

    Raises:
        ValueError: ``features`` whose shape does not fit ``q``, ``k`` and ``w_f``.
    """
    b, h, lq, _ = q.shape
    lk, width = k.shape[-2], w_f.shape[1]
    if (
        features.dim() != 5
        or features.shape[0] not in (1, b)
        or features.shape[1] not in (1, h)
        or tuple(features.shape[2:]) != (lq, lk, width)
    ):
        raise ValueError(
            f"score 'location_aware': features must be (B|1, H|1, Lq, Lk, C) = "
            f"({b}, {h}, {lq}, {lk}, {width}) for q {tuple(q.shape)}, k {tuple(k.shape)} and "
            f"w_f {tuple(w_f.shape)}; got {tuple(features.shape)}"
        )
    qa = torch.matmul(q, w_q.transpose(0, 1))  # (B, H, Lq, A)
    ka = k if w_k is None else torch.matmul(k, w_k.transpose(0, 1))  # (B, H, Lk, A)
    fa = torch.matmul(features, w_f.transpose(0, 1))  # (B|1, H|1, Lq, Lk, A)
    hidden = qa.unsqueeze(-2) + ka.unsqueeze(-3) + fa  # (B, H, Lq, Lk, A)
    if bias is not None:
        hidden = hidden + bias
    return torch.matmul(torch.tanh(hidden), v)  # (B, H, Lq, Lk)


def _unit(x: Tensor, eps: float) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


# ---------------------------------------------------------------------------------------------
# The registry that attention() resolves names against.


@dataclass(frozen=True)
class ScoreInfo:
    """How :func:`attnkit.attention` uses one score function."""

    fn: Callable[..., Tensor]  # fn(q, k, **params) -> unscaled scores
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    same_dim: bool = True  # q and k must have the same last dim
    default_scale: Callable[[int], float] = lambda d: 1.0
    # (params, scale) -> DotForm, for scores that are a dot product of transformed q and k
    dot_form: Callable[[Mapping[str, Tensor], float], DotForm] | None = None
    # (params, scale, Dq) -> AdditiveForm, for scores vᵀ tanh(W q + U k [+ b])
    additive_form: Callable[[Mapping[str, Tensor], float, int], AdditiveForm] | None = None


def _dot_form(params: Mapping[str, Tensor], scale: float) -> DotForm:
    return DotForm(unchanged, unchanged, scale)


def _general_form(params: Mapping[str, Tensor], scale: float) -> DotForm:
    weight = params["weight"]
    return DotForm(lambda q: torch.matmul(q, weight.to(q.dtype)), unchanged, scale)


def _cosine_form(params: Mapping[str, Tensor], scale: float) -> DotForm:
    return DotForm(lambda q: _unit(q, 1e-8), lambda k: _unit(k, 1e-8), scale)


def _additive_form(params: Mapping[str, Tensor], scale: float, dq: int) -> AdditiveForm:
    if "weight" in params:  # concat: W [q; k] = W[:, :Dq] q + W[:, Dq:] k
        weight = params["weight"]
        return AdditiveForm(weight[:, :dq], weight[:, dq:], None, params["v"], scale)
    return AdditiveForm(params["w_q"], params["w_k"], params.get("bias"), params["v"], scale)


SCORES: dict[str, ScoreInfo] = {
    "dot": ScoreInfo(dot, dot_form=_dot_form),
    "scaled_dot": ScoreInfo(dot, default_scale=lambda d: d**-0.5, dot_form=_dot_form),
    "general": ScoreInfo(general, required=("weight",), same_dim=False, dot_form=_general_form),
    "additive": ScoreInfo(
        additive, required=("w_q", "w_k", "v"), optional=("bias",), same_dim=False,
        additive_form=_additive_form,
    ),
    "concat": ScoreInfo(
        concat, required=("weight", "v"), same_dim=False, additive_form=_additive_form
    ),
    "cosine": ScoreInfo(cosine, dot_form=_cosine_form),
    "location": ScoreInfo(location, required=("weight",), same_dim=False),
    "location_aware": ScoreInfo(
        location_aware,
        required=("w_q", "w_f", "v", "features"),
        optional=("w_k", "bias"),
        same_dim=False,
    ),
}


class Score:
    """A score name bundled with its parameters, for :func:`attnkit.attention`.

    >>> Score("general", weight=torch.eye(4)).name
    'general'

    Raises:
        ValueError: unknown name, or missing/unexpected parameters.
        TypeError: a parameter that is not a tensor.
    """

    def __init__(self, name: str, /, **params: Tensor) -> None:
        info = lookup(name)
        missing = [p for p in info.required if p not in params]
        unknown = [p for p in params if p not in info.required + info.optional]
        if missing or unknown:
            raise ValueError(
                f"score {name!r} takes parameters {list(info.required)}"
                f"{' (optional ' + str(list(info.optional)) + ')' if info.optional else ''}; "
                f"missing {missing}, unexpected {unknown}"
            )
        for key, value in params.items():
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"score {name!r}: parameter {key!r} must be a tensor, "
                    f"got {type(value).__name__}"
                )
        self.name = name
        self.params = {key: value for key, value in params.items() if value is not None}

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.params.items())
        return f"Score({self.name!r}{', ' if shapes else ''}{shapes})"


def lookup(name: str) -> ScoreInfo:
    """The registry entry for ``name``. Raises ``ValueError`` naming the known scores."""
    if not isinstance(name, str) or name not in SCORES:
        raise ValueError(f"score must be one of {sorted(SCORES)} or a Score, got {name!r}")
    return SCORES[name]


def check_params(name: str, params: Mapping[str, Tensor], dq: int, dk: int, heads: int) -> None:
    """Check parameter shapes against the query/key dims; raise ``ValueError`` naming them."""

    def shape_error(param: str, expected: str) -> ValueError:
        got = tuple(params[param].shape)
        return ValueError(
            f"score {name!r}: parameter {param!r} must have shape {expected} for q dim {dq} "
            f"and k dim {dk}, got {got}"
        )

    if name == "general":
        w = params["weight"]
        if (
            w.shape[-2:] != (dq, dk)
            or w.dim() not in (2, 3)
            or (w.dim() == 3 and w.shape[0] not in (1, heads))
        ):
            raise shape_error("weight", f"({dq}, {dk}) or ({heads}, {dq}, {dk})")
    elif name in ("additive", "concat"):
        width = params["v"].shape[0] if params["v"].dim() == 1 else -1
        if params["v"].dim() != 1:
            raise shape_error("v", "(A,)")
        expected = (
            {"w_q": (width, dq), "w_k": (width, dk), "bias": (width,)}
            if name == "additive"
            else {"weight": (width, dq + dk)}
        )
        for param, shape in expected.items():
            if param in params and tuple(params[param].shape) != shape:
                raise shape_error(param, str(shape))
    elif name == "location":
        w = params["weight"]
        if w.dim() != 2 or w.shape[1] != dq:
            raise shape_error("weight", f"(max_keys, {dq})")
    elif name == "location_aware":
        _check_location_aware(params, dq, dk, shape_error)


def _check_location_aware(
    params: Mapping[str, Tensor], dq: int, dk: int, shape_error: Callable[[str, str], Exception]
) -> None:
    """Shapes of the ``location_aware`` parameters (``features`` is checked by the score)."""
    if params["v"].dim() != 1:
        raise shape_error("v", "(A,)")
    width = params["v"].shape[0]
    channels = params["w_f"].shape[-1] if params["w_f"].dim() == 2 else -1
    expected = {
        "w_q": (width, dq),
        "w_k": (width, dk),
        "w_f": (width, max(channels, 1)),
        "bias": (width,),
    }
    for param, shape in expected.items():
        if param in params and tuple(params[param].shape) != shape:
            raise shape_error(param, str(shape) if param != "w_f" else f"({width}, C)")
    if "w_k" not in params and dk != width:
        raise shape_error("v", f"({dk},): without w_k the keys must be projected to A = Dk")
    if params["features"].dim() != 5 or params["features"].shape[-1] != channels:
        raise shape_error("features", f"(B|1, H|1, Lq, Lk, {channels})")

def resolve(score: str | Score, scale: float | None, dq: int) -> Scoring:
    """Turn the user's ``score``/``scale`` into a :class:`Scoring` (``fn(q, k)`` scaled, with
    the dot-product or additive form a fast kernel can use)."""
    if isinstance(score, Score):
        name, params = score.name, score.params
    else:
        info = lookup(score)
        if info.required:
            raise ValueError(
                f"score {score!r} needs parameters {list(info.required)}: "
                f"pass score=attnkit.Score({score!r}, ...)"
            )
        name, params = score, {}
    info = SCORES[name]
    factor = info.default_scale(dq) if scale is None else float(scale)
    fn = info.fn

    def call(q: Tensor, k: Tensor) -> Tensor:
        # Parameters follow the compute dtype (kernels may upcast bf16 inputs to float32).
        raw = fn(q, k, **{key: p.to(q.dtype) for key, p in params.items()})
        return raw if factor == 1.0 else raw * factor

    return Scoring(
        name, call, params, factor,
        dot=info.dot_form(params, factor) if info.dot_form is not None else None,
        additive=info.additive_form(params, factor, dq) if info.additive_form else None,
    )


__all__ = [
    "SCORES",
    "Score",
    "additive",
    "concat",
    "cosine",
    "dot",
    "general",
    "location",
    "location_aware",
    "scaled_dot",
]
