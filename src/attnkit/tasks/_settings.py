"""Task settings back from a checkpoint's task config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def settings_from(cls: type[T], task_config: Mapping[str, Any]) -> T:
    """``cls`` (a settings dataclass) from a checkpoint's task config; keys that are not
    fields of ``cls`` (``data_name`` and the like) are ignored."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in task_config.items() if k in fields})
