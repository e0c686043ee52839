"""Translation pairs from a spec string: ``load_pairs("num2words:de-en")``.

Known prefixes (each a small module in :mod:`attnkit.data.sources`):

=============  =======================================================================
``num2words``  ``num2words:de-en[:max=999999]`` numbers in words (PyPI num2words)
``bible``      ``bible:en-es`` / ``bible:es-en`` KJV <-> Reina-Valera 1909 (Debian SWORD)
``gettext``    ``gettext:fr`` English <-> LANG UI messages (installed .mo catalogues)
``tsv``        ``tsv:PATH`` a user's ``source<TAB>target`` file
=============  =======================================================================

Options follow a second colon as ``key=value`` pairs separated by commas
(``num2words:de-en:max=99999,valid=0.1``).
"""

from __future__ import annotations

import attnkit.data.sources  # noqa: F401  (registers the built-in sources)
from attnkit.data.errors import DataError
from attnkit.data.registry import available_sources, get_source, parse_spec
from attnkit.data.splits import Splits

__all__ = ["DEFAULT_SPEC", "Splits", "describe_sources", "load_pairs"]

#: The built-in default data set: small, offline, and needs attention to reorder.
DEFAULT_SPEC = "num2words:de-en"


def load_pairs(spec: str = DEFAULT_SPEC, *, seed: int = 0) -> Splits:
    """Load the translation pairs named by ``spec``, split into train / valid / test.

    Args:
        spec: ``PREFIX:ARG[:OPTIONS]``, e.g. ``"num2words:de-en"``, ``"bible:en-es"``,
            ``"gettext:fr"``, ``"tsv:data/eng-fra.tsv"``.
        seed: the split seed; the same spec and seed always give the same splits.

    Returns:
        :class:`Splits` with non-empty, non-overlapping ``train``, ``valid`` and ``test``
        lists of ``(source, target)`` strings.

    Raises:
        TypeError: ``spec`` is not a string or ``seed`` not an int.
        DataError: a malformed spec, unknown source prefix (the known ones are listed),
            unknown language pair, bad option, or bad data (file and line named).
        DataFileNotFoundError: a data file is missing.
        MissingPackageError: the data's package is not installed (says what to install).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    prefix, arg, options = parse_spec(spec)
    source = get_source(prefix)
    splits = source.load(arg, options, seed)
    if not isinstance(splits, Splits):
        raise DataError(f"data source {prefix!r} returned {type(splits).__name__}, not Splits")
    return splits


def describe_sources() -> str:
    """One line per registered source: ``example: summary`` (for ``--help`` text)."""
    return "\n".join(f"{s.example}: {s.summary}" for s in available_sources())
