"""Nested state (optimizer, scheduler, RNG) as JSON plus a flat dict of tensors — no pickle.

``split_tensors`` replaces every tensor by a reference ``{"__tensor__": "t0"}`` and returns the
tensors beside the JSON-able rest (saved with ``safetensors``); ``join_tensors`` undoes it.
Tuples and dicts with non-string keys (an optimizer's state is keyed by int) are tagged so
they come back with their own types.
"""

from __future__ import annotations

import json
from typing import Any

from torch import Tensor

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_ITEMS = "__items__"


def split_tensors(obj: Any) -> tuple[Any, dict[str, Tensor]]:
    """Return ``(json_able, tensors)``; the same tensor object is stored once.

    Raises:
        TypeError: a value that is neither JSON-able, a tuple, nor a tensor (its path named).
    """
    tensors: dict[str, Tensor] = {}
    seen: dict[int, str] = {}

    def encode(value: Any, path: str) -> Any:
        if isinstance(value, Tensor):
            key = seen.get(id(value))
            if key is None:
                key = f"t{len(tensors)}"
                seen[id(value)] = key
                tensors[key] = value.detach().cpu().contiguous()
            return {_TENSOR: key}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, tuple):
            return {_TUPLE: [encode(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            plain = all(isinstance(k, str) for k in value)
            if plain and not {_TENSOR, _TUPLE, _ITEMS} & set(value):
                return {k: encode(v, f"{path}.{k}") for k, v in value.items()}
            items = [[encode(k, path), encode(v, f"{path}[{k!r}]")] for k, v in value.items()]
            return {_ITEMS: items}
        raise TypeError(f"cannot save {path} of type {type(value).__name__} in a checkpoint")

    return encode(obj, "state"), tensors


def join_tensors(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """Rebuild what :func:`split_tensors` took apart.

    Raises:
        KeyError: a tensor reference with no tensor in ``tensors``.
    """

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if isinstance(value, dict):
            if set(value) == {_TENSOR}:
                return tensors[value[_TENSOR]]
            if set(value) == {_TUPLE}:
                return tuple(decode(v) for v in value[_TUPLE])
            if set(value) == {_ITEMS}:
                return {_hashable(decode(k)): decode(v) for k, v in value[_ITEMS]}
            return {k: decode(v) for k, v in value.items()}
        return value

    return decode(obj)


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def dumps_json(obj: Any) -> bytes:
    """Stable, readable JSON bytes (sorted keys, 2-space indent, trailing newline)."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")
