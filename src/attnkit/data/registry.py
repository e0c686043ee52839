"""The registry of translation data sources and the ``PREFIX:ARG[:OPTIONS]`` spec syntax.

A source is a plain function ``load(arg, options, seed) -> Splits`` registered under a
prefix with :func:`register_source`; :func:`attnkit.data.translation.load_pairs` resolves a
spec such as ``"num2words:de-en:max=99999,valid=0.1"`` to one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from attnkit.data.errors import DataError
from attnkit.data.splits import Splits

__all__ = ["Source", "SourceFn", "available_sources", "check_options", "get_source",
           "int_option", "parse_spec", "register_source"]

SourceFn = Callable[[str, dict[str, str], int], Splits]


@dataclass(frozen=True)
class Source:
    """One registered data source.

    Attributes:
        prefix: the spec prefix (``"num2words"``).
        load: ``load(arg, options, seed) -> Splits``.
        summary: one line on what the data is and where it comes from.
        example: an example spec.
        options: the option names the source accepts.
    """

    prefix: str
    load: SourceFn
    summary: str
    example: str
    options: tuple[str, ...] = ()


_SOURCES: dict[str, Source] = {}


def register_source(prefix: str, *, summary: str, example: str,
                    options: tuple[str, ...] = ()) -> Callable[[SourceFn], SourceFn]:
    """Decorator registering ``fn`` as the loader for specs starting with ``prefix:``.

    Raises:
        ValueError: the prefix is empty, contains ``:``, or is already registered.
    """
    if not prefix or ":" in prefix:
        raise ValueError(f"source prefix must be non-empty without ':', got {prefix!r}")

    def decorate(fn: SourceFn) -> SourceFn:
        if prefix in _SOURCES:
            raise ValueError(f"data source {prefix!r} is already registered")
        _SOURCES[prefix] = Source(prefix, fn, summary, example, tuple(options))
        return fn

    return decorate


def available_sources() -> list[Source]:
    """All registered sources, sorted by prefix."""
    return [_SOURCES[k] for k in sorted(_SOURCES)]


def get_source(prefix: str) -> Source:
    """The source registered under ``prefix``.

    Raises:
        DataError: unknown prefix (the message lists the known ones with examples).
    """
    try:
        return _SOURCES[prefix]
    except KeyError:
        known = ", ".join(f"{s.prefix} (e.g. {s.example})" for s in available_sources())
        raise DataError(f"unknown data source {prefix!r}; known sources: {known}") from None


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``"PREFIX:ARG[:k=v,k=v]"`` into ``(prefix, arg, options)``.

    The options part is the text after the *last* colon, and only if it contains ``=``, so
    an argument may itself contain colons (a file path). Option values are strings; each
    source converts and checks its own.

    Raises:
        TypeError: ``spec`` is not a string.
        DataError: no ``:``, an empty prefix or argument, an option without ``=``, or an
            option given twice.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str like 'num2words:de-en', got {type(spec).__name__}")
    prefix, sep, rest = spec.strip().partition(":")
    if not sep or not prefix or not rest:
        raise DataError(
            f"data spec {spec!r} must look like PREFIX:ARG[:OPTIONS], e.g. 'num2words:de-en' "
            "or 'tsv:pairs.tsv'"
        )
    options: dict[str, str] = {}
    head, sep, tail = rest.rpartition(":")
    if sep and "=" in tail:
        rest = head
        for item in tail.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise DataError(f"data spec {spec!r}: option {item!r} must look like key=value")
            if key in options:
                raise DataError(f"data spec {spec!r}: option {key!r} given twice")
            options[key] = value.strip()
    if not rest:
        raise DataError(f"data spec {spec!r} has an empty argument after {prefix!r}")
    return prefix, rest, options


def check_options(source: str, options: dict[str, str], allowed: tuple[str, ...]) -> None:
    """Raise :class:`DataError` naming any option ``source`` does not understand."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(
            f"{source}: unknown option(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )


def int_option(source: str, options: dict[str, str], name: str, default: int, *,
               minimum: int = 0) -> int:
    """Read an integer option (``1e6`` and ``1_000_000`` are accepted) or raise DataError."""
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.replace("_", "")) if "e" not in raw.lower() else int(float(raw))
    except (ValueError, OverflowError):
        raise DataError(f"{source}: option {name}={raw!r} is not an integer") from None
    if value < minimum:
        raise DataError(f"{source}: option {name}={raw!r} must be >= {minimum}")
    return value
