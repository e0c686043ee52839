"""A self-contained HTML head view: one file, no network, data embedded as JSON.

Tokens stand in two columns (queries left, keys right; the same tokens for self-attention,
target and source for cross-attention). Pick a layer and a head, or all heads coloured per
head; hover a token to see lines to the tokens it attends to (or, on the right, from the
tokens attending to it), with opacity and width by weight; click to pin. The page itself is
in :mod:`attnkit.explain._viewer_page`; it says how the drawn state is exposed in the DOM.

Long inputs: when the weights would not fit the page (more than :data:`DENSE_LIMIT` numbers)
or arrive as :class:`~attnkit.explain.compact.TopK`, the page keeps each query's top-k keys
and the mass of the rest (``k`` chosen so the entries fit :data:`COMPACT_BUDGET`), stored as
16-bit key indices and 16-bit fixed-point weights (steps of 1/65535) in base64, and says so.

Summaries recorded by ``record(model, weights=...)`` are shown as what they are: a
``"heads_mean"`` layer as one head (the mean of the heads), a ``TopK(k)`` layer as each
query's top-k keys (a compact layer), and a ``"key_totals"`` layer (or a :class:`KeyTotals`)
as a heat strip over the key tokens: each key shaded by the attention it received in total,
relative to the strongest key of the layer (the strongest looks strongest), with no lines,
since which query gave it is not kept.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnkit.explain._files import as_path, write_atomic
from attnkit.explain._viewer_page import PAGE
from attnkit.explain.compact import TopK, choose_k, top_k
from attnkit.explain.record import Recording
from attnkit.statistics import TopK as TopKeys


@dataclass(frozen=True)
class KeyTotals:
    """One layer's ``"key_totals"``: the attention each key received in total, summed over
    the queries, ``(B, H, Lk)`` or ``(H, Lk)``: shown as a heat strip over the key tokens."""

    totals: torch.Tensor


Attention = Recording | Mapping[str, Any] | Sequence[Any] | torch.Tensor | np.ndarray

DENSE_LIMIT = 1 << 20  # weights written out as JSON numbers up to this many (~7 MB)
COMPACT_BUDGET = 10 << 20  # bytes of top-k entries (13 MB in base64): pages stay under 20 MB
FIXED_POINT = 65535  # compact weights are stored as round(w · 65535) in 16 bits


def write_viewer(
    attention: Attention,
    path: str | os.PathLike[str],
    *,
    tokens: Sequence[str],
    key_tokens: Sequence[str] | None = None,
    example: int = 0,
    title: str = "attnkit: attention",
    min_weight: float = 0.01,
    decimals: int = 4,
    notes: Sequence[str] = (),
) -> Path:
    """Write the head view of ``attention`` to the ``.html`` file ``path`` (atomically).

    Arguments as :func:`render_viewer`. Returns the path written.
    """
    out = as_path(path, suffix=".html")
    page = render_viewer(
        attention,
        tokens=tokens,
        key_tokens=key_tokens,
        example=example,
        title=title,
        min_weight=min_weight,
        decimals=decimals,
        notes=notes,
    )
    return write_atomic(out, page.encode("utf-8"))


def render_viewer(
    attention: Attention,
    *,
    tokens: Sequence[str],
    key_tokens: Sequence[str] | None = None,
    example: int = 0,
    title: str = "attnkit: attention",
    min_weight: float = 0.01,
    decimals: int = 4,
    notes: Sequence[str] = (),
) -> str:
    """The head view of ``attention`` as one self-contained HTML page.

    Args:
        attention: the layers' weights, first layer first, one of
            - a :class:`~attnkit.explain.Recording` (every recorded layer; a layer that ran
              several times, e.g. once per decoding step, has its calls joined along queries);
            - a mapping ``{layer name: weights}``;
            - a sequence of weights (named ``"layer 0"``, ``"layer 1"``, ...);
            - a tensor/array ``(N, H, Lq, Lk)`` or ``(N, B, H, Lq, Lk)``;
            where each layer's weights are ``(H, Lq, Lk)`` or ``(B, H, Lq, Lk)`` (a tensor or
            numpy array), a :class:`~attnkit.explain.compact.TopK` or a :class:`KeyTotals`.
            Layers may differ in their number of heads. A recording of summaries shows them
            as the module docstring says.
        tokens: the ``Lq`` query tokens (left column).
        key_tokens: the ``Lk`` key tokens (right column); default ``tokens`` (self-attention).
        example: which batch item to show when the weights have a batch dimension.
        title: the page title (escaped).
        min_weight: lines for weights below this are not drawn.
        decimals: weights are rounded to this many decimals in the page (dense pages).
        notes: lines shown under the title (e.g. how a long input was cut into chunks).

    Long inputs: with any :class:`~attnkit.explain.compact.TopK` layer, or more than
    :data:`DENSE_LIMIT` weights in all, the page keeps each query's top-k keys and the
    remaining mass (see the module docstring) and states it.

    Raises:
        TypeError: an unsupported type for ``attention``, tokens that are not strings.
        ValueError: no layers, wrong ranks, NaN/inf weights, shapes that do not match the
            tokens (the message names the layer and shapes), ``example`` out of range, or
            ``min_weight``/``decimals`` out of range.
    """
    queries = _tokens(tokens, "tokens")
    keys = queries if key_tokens is None else _tokens(key_tokens, "key_tokens")
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {type(title).__name__}")
    if (
        isinstance(min_weight, bool)
        or not isinstance(min_weight, (int, float))
        or not (0.0 <= min_weight <= 1.0)
    ):
        raise ValueError(f"min_weight must be a number in [0, 1], got {min_weight!r}")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 1 <= decimals <= 8:
        raise ValueError(f"decimals must be an int in [1, 8], got {decimals!r}")
    if isinstance(notes, str) or not all(isinstance(n, str) for n in notes):
        raise TypeError("notes must be a sequence of str")
    named = _named_layers(attention, example, len(keys))
    pairs = [(name, w) for name, w in named if not isinstance(w, KeyTotals)]
    dense = sum(int(np.prod(_shape(w))) for _, w in pairs)
    compact = dense > DENSE_LIMIT or any(isinstance(w, TopK) for _, w in pairs)
    rows = sum(int(np.prod(_shape(w)[-3:-1])) for _, w in pairs)
    k = choose_k(rows, COMPACT_BUDGET)
    layers = []
    for name, weights in named:
        if isinstance(weights, KeyTotals):
            layers.append(_totals_layer(name, weights, example, keys, decimals))
            continue
        if compact:
            kept = (
                weights.first(k)
                if isinstance(weights, TopK)
                else _as_top_k(weights, name, example, k)
            )
            _check_layer_shape(name, kept.shape, queries, keys, key_tokens)
            layers.append(_compact_layer(name, kept))
            continue
        heads = _layer(weights, name, example)  # (H, Lq, Lk)
        _check_layer_shape(name, heads.shape, queries, keys, key_tokens)
        layers.append({"name": name, "heads": np.round(heads, decimals).tolist()})
    notes = list(notes)
    if any("totals" in layer for layer in layers):
        notes.append(
            "Key totals: each key is shaded by the attention it received from all the queries "
            "together (the mean over the heads shown), relative to the layer's strongest key; "
            "which query gave it is not kept, so no lines are drawn."
        )
    if compact:
        k_used = max(layer.get("k", 0) for layer in layers)
        notes.append(
            f"Long input: each query keeps its {k_used} strongest keys per head and the "
            "mass of the rest (shown when a token is focused); weights stored in steps of "
            f"1/{FIXED_POINT}. The overview without a focused token draws the strongest lines."
        )
    data = {
        "title": title,
        "queries": queries,
        "keys": keys,
        "selfAttention": key_tokens is None,
        "minWeight": float(min_weight),
        "compact": compact,
        "notes": notes,
        "layers": layers,
    }
    return PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", _script_json(data))


def _shape(weights: Any) -> tuple[int, ...]:
    """The shape of one layer's weights as given (``(H, Lq, Lk)`` for a TopK)."""
    if isinstance(weights, TopK):
        return weights.shape
    return tuple(int(n) for n in getattr(weights, "shape", (0,)))


def _check_layer_shape(
    name: str,
    shape: tuple[int, ...],
    queries: list[str],
    keys: list[str],
    key_tokens: Sequence[str] | None,
) -> None:
    if tuple(shape[1:]) != (len(queries), len(keys)):
        raise ValueError(
            f"layer {name!r}: weights for one example have shape {tuple(shape)} (H, Lq, Lk) "
            f"but there are {len(queries)} query tokens and {len(keys)} key tokens"
            + (" (key_tokens defaults to tokens)" if key_tokens is None else "")
        )


def _as_top_k(weights: Any, name: str, example: int, k: int) -> TopK:
    heads = _layer(weights, name, example)  # (H, Lq, Lk) float64, checked
    return top_k(torch.from_numpy(heads).float(), k)


def _compact_layer(name: str, kept: TopK) -> dict[str, Any]:
    """One layer in the page's compact form: base64 of little-endian uint16 (or uint32 key
    indices past 65,535 keys), ``(H, Lq, k)`` row-major, and ``rest (H, Lq)``."""
    values, rest = kept.values.detach().cpu().numpy(), kept.rest.detach().cpu().numpy()
    if not (np.isfinite(values).all() and np.isfinite(rest).all()):
        raise ValueError(f"layer {name!r}: weights contain NaN or infinite values")
    wide = kept.kv_len > 0xFFFF
    index = kept.indices.detach().cpu().numpy().astype("<u4" if wide else "<u2")

    def fixed(x: np.ndarray) -> str:
        q = np.rint(np.clip(x, 0.0, 1.0) * FIXED_POINT).astype("<u2")
        return base64.b64encode(q.tobytes()).decode("ascii")

    heads, _, k = values.shape
    return {
        "name": name,
        "count": int(heads),
        "k": int(k),
        "indexBytes": 4 if wide else 2,
        "index": base64.b64encode(index.tobytes()).decode("ascii"),
        "weight": fixed(values),
        "rest": fixed(rest),
    }


def _script_json(data: Any) -> str:
    """JSON that cannot end its ``<script>`` element early or open a comment in it."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _totals_layer(
    name: str, layer: KeyTotals, example: int, keys: list[str], decimals: int
) -> dict[str, Any]:
    """A key-totals layer of the page: ``{"name", "totals": [[t (Lk)] (H)]}``."""
    totals = layer.totals
    if not isinstance(totals, torch.Tensor) or totals.dim() not in (2, 3):
        shape = tuple(totals.shape) if isinstance(totals, torch.Tensor) else type(totals).__name__
        raise ValueError(f"layer {name!r}: key totals must be (B, H, Lk) or (H, Lk), got {shape}")
    array = _layer(totals.unsqueeze(-2), name, example)[:, 0]  # (H, Lk), checked like weights
    if array.shape[-1] != len(keys):
        raise ValueError(
            f"layer {name!r}: key totals for one example have shape {array.shape} (H, Lk) but "
            f"there are {len(keys)} key tokens"
        )
    return {"name": name, "totals": np.round(array, decimals).tolist()}


def _from_recording(rec: Recording, name: str, example: int, kv_len: int) -> Any:
    """One recorded layer in a form the page shows (see the module docstring)."""
    joined = rec.concat(name)
    if rec.weights == "key_totals":
        return KeyTotals(joined)  # (B, H, Lk)
    if rec.weights == "heads_mean":
        return joined.unsqueeze(1)  # (B, 1, Lq, Lk): one head, the mean
    if isinstance(rec.weights, TopKeys):
        values, indices = (t[example] for t in joined)  # (H, Lq, k) each
        total = values.float().sum(dim=-1)  # (H, Lq): 0 for a query that saw no key
        rest = torch.where(total > 0, (1.0 - total).clamp_min(0.0), 0.0)  # (H, Lq)
        return TopK(values.float().contiguous(), indices.contiguous(), rest, kv_len)
    return joined


def _named_layers(attention: Any, example: int, kv_len: int) -> list[tuple[str, Any]]:
    if isinstance(attention, (TopK, KeyTotals)):
        raise TypeError(
            f"attention: wrap a single {type(attention).__name__} layer in a list or a mapping"
        )
    if isinstance(attention, Recording):
        named = [
            (name, _from_recording(attention, name, example, kv_len))
            for name in attention.names()
        ]
    elif isinstance(attention, Mapping):
        named = []
        for name, weights in attention.items():
            if not isinstance(name, str):
                raise TypeError(f"attention: layer names must be str, got {type(name).__name__}")
            named.append((name, weights))
    elif isinstance(attention, (torch.Tensor, np.ndarray)):
        if attention.ndim not in (4, 5):
            raise ValueError(
                f"attention as one tensor must be (N, H, Lq, Lk) or (N, B, H, Lq, Lk), got shape "
                f"{tuple(attention.shape)}"
                + ("; wrap a single layer in a list" if attention.ndim == 3 else "")
            )
        named = [(f"layer {i}", attention[i]) for i in range(attention.shape[0])]
    elif isinstance(attention, Sequence) and not isinstance(attention, (str, bytes)):
        named = [(f"layer {i}", w) for i, w in enumerate(attention)]
    else:
        raise TypeError(
            "attention must be a Recording, a mapping of layer names to weights, a sequence of "
            f"weights or a tensor/array, got {type(attention).__name__}"
        )
    if not named:
        raise ValueError("attention holds no layers")
    return named


def _layer(weights: Any, name: str, example: int) -> np.ndarray:
    if isinstance(weights, torch.Tensor):
        if weights.is_complex() or weights.dtype == torch.bool:
            raise TypeError(f"layer {name!r}: weights must be real numbers, got {weights.dtype}")
        array = weights.detach().to("cpu", torch.float64).numpy()
    elif isinstance(weights, np.ndarray):
        if (
            weights.dtype == np.bool_
            or not np.issubdtype(weights.dtype, np.number)
            or (np.iscomplexobj(weights))
        ):
            raise TypeError(f"layer {name!r}: weights must be real numbers, got {weights.dtype}")
        array = weights.astype(np.float64)
    else:
        raise TypeError(
            f"layer {name!r}: weights must be a tensor or numpy array, got {type(weights).__name__}"
        )
    if array.ndim == 4:
        if (
            isinstance(example, bool)
            or not isinstance(example, int)
            or not (-array.shape[0] <= example < array.shape[0])
        ):
            raise ValueError(
                f"example={example!r} is out of range for layer {name!r} with batch size "
                f"{array.shape[0]} (shape {array.shape})"
            )
        array = array[example]  # (H, Lq, Lk)
    if array.ndim != 3:
        raise ValueError(
            f"layer {name!r}: weights must be (H, Lq, Lk) or (B, H, Lq, Lk), got shape "
            f"{array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"layer {name!r} has no heads: shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"layer {name!r}: weights contain NaN or infinite values")
    return array


def _tokens(tokens: Any, name: str) -> list[str]:
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"{name} must be a sequence of strings, got {type(tokens).__name__}")
    out = []
    for i, t in enumerate(tokens):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
        out.append(t)
    if not out:
        raise ValueError(f"{name} is empty")
    return out
