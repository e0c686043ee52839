"""Argument checks shared by the layers, models, data and tasks."""

from __future__ import annotations


def check_positive_ints(**values: object) -> None:
    """Raise ``ValueError`` naming the first of ``values`` that is not an ``int`` ≥ 1 (a
    ``bool`` is not an int here)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_positive_fields(obj: object, names: tuple[str, ...]) -> None:
    """:func:`check_positive_ints` of the attributes ``names`` of ``obj`` (a config)."""
    check_positive_ints(**{name: getattr(obj, name) for name in names})
