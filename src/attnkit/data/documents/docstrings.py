"""The built-in document collection: docstrings of the standard library and scientific packages.

Every public function, class and method of the Python standard library (its top-level modules
and the submodules of its packages) and of the installed scientific packages (NumPy, SciPy,
scikit-learn, PyTorch, matplotlib; whichever are installed) gives one :class:`DocEntry`:

- ``summary``: the docstring's one-line summary (its first paragraph, after a leading call
  signature such as ``add(x1, x2, /, ...)``), held out as the question (retrieval) or the
  target (summarisation);
- ``body``: the rest of the docstring, without the sections that quote *other* objects'
  summaries or hold code (``See Also``, ``Examples``, ``References``), and with the reST
  markup (``:func:`x```, ````x````) reduced to its text.

Entries are de-duplicated by object, by summary and by body (aliases and inherited docstrings
would otherwise put the same question in two splits). The collection depends only on the
installed versions; it is parsed once and cached (``attnkit.data.cache``), keyed on the Python
and package versions. Splits are by entry name (``split_by_key``), so they are stable.

Nothing here is downloaded: the text is what is installed on the machine.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import io
import pkgutil
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

from attnkit.data.cache import read_cache, write_cache
from attnkit.data.errors import DataError
from attnkit.data.splits import split_by_key

__all__ = [
    "SCIENTIFIC_MODULES",
    "DocEntry",
    "DocSplits",
    "collect_docstrings",
    "default_modules",
    "load_docstrings",
    "split_docstring",
]

_VERSION = 3  # bump when the extraction changes: invalidates the cache
# Standard-library modules that act on import (open a browser, print, need a display) or are
# tools, tests and deprecated stubs rather than a library.
_SKIP_STDLIB = frozenset(
    {
        "antigravity",
        "distutils",
        "ensurepip",
        "idlelib",
        "lib2to3",
        "msilib",
        "msvcrt",
        "nt",
        "pydoc_data",
        "test",
        "this",
        "tkinter",
        "turtle",
        "turtledemo",
        "venv",
        "winreg",
        "winsound",
    }
)
# package -> its public modules read ("." is the package itself)
_SCIENTIFIC = {
    "numpy": ". linalg fft random ma polynomial.polynomial polynomial.chebyshev "
    "polynomial.legendre lib.stride_tricks lib.recfunctions testing strings rec emath",
    "scipy": "cluster.hierarchy cluster.vq constants fft integrate interpolate io linalg ndimage "
    "odr optimize signal sparse sparse.linalg sparse.csgraph spatial spatial.distance "
    "spatial.transform special stats",
    "sklearn": "base calibration cluster compose covariance cross_decomposition datasets "
    "decomposition discriminant_analysis dummy ensemble feature_extraction "
    "feature_extraction.text feature_selection gaussian_process impute inspection isotonic "
    "kernel_approximation kernel_ridge linear_model manifold metrics metrics.pairwise mixture "
    "model_selection multiclass multioutput naive_bayes neighbors neural_network pipeline "
    "preprocessing random_projection semi_supervised svm tree utils",
    "torch": ". nn nn.functional nn.init nn.utils nn.utils.rnn linalg fft special optim "
    "optim.lr_scheduler distributions autograd utils.data random sparse func",
    "matplotlib": ". pyplot colors cm ticker patches figure",
}
SCIENTIFIC_MODULES: tuple[str, ...] = tuple(
    package if sub == "." else f"{package}.{sub}"
    for package, subs in _SCIENTIFIC.items()
    for sub in subs.split()
)
_DROPPED_SECTIONS = frozenset({"see also", "examples", "example", "references", "seealso"})
_SIGNATURE = re.compile(r"[\w.]+\(.*\)(\s*->\s*.*)?")
_ROLE = re.compile(r":[\w-]+(?::[\w-]+)?:`~?([^`<]*?)\s*(?:<[^>`]*>)?`")
_LITERAL = re.compile(r"``(.+?)``")
_RULE = re.compile(r"[-=~^]{3,}")
_DIRECTIVE_SECTION = re.compile(r"(examples?|see also|references?)::?", re.IGNORECASE)


@dataclass(frozen=True)
class DocEntry:
    """One docstring: ``name`` (``numpy.linalg.inv``), its ``summary`` line and ``body``."""

    name: str
    summary: str
    body: str


@dataclass(frozen=True)
class DocSplits:
    """Train / validation / test docstrings, split by entry name."""

    train: list[DocEntry]
    valid: list[DocEntry]
    test: list[DocEntry]


def clean_markup(text: str) -> str:
    """reST roles and literals reduced to their text: ``:func:`inv``` -> ``inv``."""
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", text))


def _drop_sections(lines: list[str]) -> list[str]:
    """Remove numpydoc (underlined) and Google/torch (``Example::``) sections that quote
    other objects' summaries or hold code."""
    kept: list[str] = []
    dropping_until_heading = False
    directive_indent: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        underlined = i + 1 < len(lines) and _RULE.fullmatch(lines[i + 1].strip()) is not None
        if underlined and stripped:
            dropping_until_heading = stripped.lower() in _DROPPED_SECTIONS
            directive_indent = None
        if dropping_until_heading:
            continue
        indent = len(line) - len(line.lstrip())
        if directive_indent is not None:
            if not stripped or indent > directive_indent or stripped.startswith((">>>", "...")):
                continue
            directive_indent = None
        if _DIRECTIVE_SECTION.fullmatch(stripped):
            directive_indent = indent
            continue
        if stripped.startswith(">>>"):
            continue
        kept.append(line)
    return kept


def split_docstring(doc: str) -> tuple[str, str] | None:
    """``(summary, body)`` of a cleaned docstring (``inspect.getdoc``), or ``None`` when it has
    no usable summary (3-35 words) or too little body (fewer than 8 words)."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", doc.strip()) if p.strip()]
    while paragraphs and _SIGNATURE.fullmatch(" ".join(paragraphs[0].split())):
        paragraphs.pop(0)  # torch and ufunc docstrings start with the call signature
    if not paragraphs:
        return None
    first = paragraphs[0].splitlines()
    if len(paragraphs) == 1 or (len(first) > 1 and first[0].rstrip().endswith(".")):
        # "Summary.\nbody continues" (no blank line after the summary line)
        summary, rest = first[0], "\n".join([*first[1:], "", *paragraphs[1:]])
    else:
        summary, rest = " ".join(paragraphs[0].split()), "\n\n".join(paragraphs[1:])
    summary = " ".join(clean_markup(summary).split())
    body = clean_markup("\n".join(_drop_sections(rest.splitlines()))).strip()
    body = "\n".join(line for line in body.splitlines() if line.strip() != summary)
    n_summary = len(summary.split())
    if not 3 <= n_summary <= 35 or summary.endswith(":") or len(body.split()) < 8:
        return None
    if not re.search(r"[A-Za-z]{3}", summary):
        return None
    return summary, body


def default_modules() -> list[str]:
    """The standard library's public modules (and its packages' submodules), then
    :data:`SCIENTIFIC_MODULES`."""
    names = sorted(
        n for n in sys.stdlib_module_names if not n.startswith("_") and n not in _SKIP_STDLIB
    )
    return [*names, *SCIENTIFIC_MODULES]


def _modules(names: Sequence[str], walk_stdlib: bool) -> Iterator[ModuleType]:
    stdlib = set(sys.stdlib_module_names)
    for name in names:
        module = _import(name)
        if module is None:
            continue
        yield module
        if walk_stdlib and name in stdlib and hasattr(module, "__path__"):
            for info in pkgutil.walk_packages(module.__path__, f"{name}.", onerror=_ignore):
                parts = info.name.split(".")
                if any(p.startswith("_") or p in ("test", "tests", "idle_test") for p in parts):
                    continue
                sub = _import(info.name)
                if sub is not None:
                    yield sub


def _ignore(name: str) -> None:
    return None


def _import(name: str) -> ModuleType | None:
    """Import quietly; a module that fails to import (missing optional parts) is skipped."""
    sink = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except BaseException:
            return None


def _members(module: ModuleType) -> Iterator[tuple[str, object]]:
    root = module.__name__.split(".", 1)[0]
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_") or not callable(obj):
            continue
        home = getattr(obj, "__module__", None) or ""
        if home and home.split(".", 1)[0] not in (root, "builtins", f"_{root}"):
            continue  # re-exported from another package
        yield f"{module.__name__}.{attr}", obj
        if inspect.isclass(obj):
            for method, member in sorted(vars(obj).items()):
                if method.startswith("_"):
                    continue
                if isinstance(member, (classmethod, staticmethod)):
                    member = member.__func__
                if inspect.isfunction(member) or inspect.ismethoddescriptor(member):
                    yield f"{module.__name__}.{attr}.{method}", member


def collect_docstrings(modules: Sequence[str] | None = None) -> list[DocEntry]:
    """Import ``modules`` (default :func:`default_modules`) and extract their entries.

    Modules that are not installed or fail to import are skipped. Entries are unique by
    object, summary and body (the first occurrence, in module order, is kept).

    Raises:
        DataError: no entry at all could be extracted.
    """
    names = default_modules() if modules is None else list(modules)
    seen_objects: set[int] = set()
    seen_text: set[str] = set()
    entries: list[DocEntry] = []
    for module in _modules(names, walk_stdlib=modules is None):
        for name, obj in _members(module):
            if id(obj) in seen_objects:
                continue
            seen_objects.add(id(obj))
            try:
                doc = inspect.getdoc(obj)
            except Exception:
                continue
            parts = split_docstring(doc) if isinstance(doc, str) else None
            if parts is None:
                continue
            summary, body = parts
            keys = (" ".join(summary.lower().split()), " ".join(body.lower().split()))
            if keys[0] in seen_text or keys[1] in seen_text:
                continue
            seen_text.update(keys)
            entries.append(DocEntry(name, summary, body))
    if not entries:
        raise DataError(f"no docstring with a summary and a body found in modules {names[:5]}")
    return entries


def _fingerprint(modules: Sequence[str] | None) -> dict[str, object]:
    versions = {}
    for package in ("numpy", "scipy", "scikit-learn", "torch", "matplotlib"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "extractor": _VERSION,
        "python": sys.version,
        "packages": versions,
        "modules": None if modules is None else list(modules),
    }


def load_docstrings(
    *, modules: Sequence[str] | None = None, seed: int = 0, valid: float = 0.05, test: float = 0.1
) -> DocSplits:
    """The collection split into train/valid/test by entry name (cached after the first call).

    Args:
        modules: module names to read (default: the standard library and the scientific
            packages, see :func:`default_modules`).
        seed: the split seed.
        valid, test: fractions of the entries.

    Raises:
        DataError: nothing extracted, or fractions that leave no training data.
    """
    fingerprint = _fingerprint(modules)
    cached = read_cache("docstrings", fingerprint)
    if isinstance(cached, list):
        entries = [DocEntry(*row) for row in cached]
    else:
        entries = collect_docstrings(modules)
        write_cache("docstrings", fingerprint, [[e.name, e.summary, e.body] for e in entries])
    train, valid_part, test_part = split_by_key(
        entries, lambda e: e.name, valid=valid, test=test, seed=seed
    )
    return DocSplits(train, valid_part, test_part)
