"""Speech synthesised with Debian's ``espeak-ng``, with held-out voices and speeds for testing.

A voice is an espeak-ng language voice ("en-us", "en-gb-scotland", ...) with a variant
("+m3", "+f2": formants, breathiness, pitch range), a speed (words per minute) and a base pitch.
The three splits use disjoint variants, speeds and pitches (:data:`SPLIT_VOICES`): the test
split's speakers are never heard in training, so it measures generalisation to new voices,
not memory. Every language voice appears in every split.

Each utterance is synthesised once into the cache (``<cache>/speech/espeak/``), named by a hash
of the espeak-ng version, voice and text, written to a temporary name and renamed (a reader
never sees half a file; two processes may synthesise the same file safely).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from attnkit.data.cache import cache_dir
from attnkit.data.errors import DataError, MissingPackageError

__all__ = [
    "LANGUAGES",
    "SPLIT_VOICES",
    "Voice",
    "VoiceSet",
    "draw_voices",
    "espeak_version",
    "synthesize",
    "synthesize_many",
]

ESPEAK = "espeak-ng"
#: espeak-ng English voices used in every split
LANGUAGES = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland")


@dataclass(frozen=True)
class Voice:
    """One espeak-ng speaker: ``language+variant`` at ``speed`` words/minute and ``pitch``
    (0..99, espeak's default 50)."""

    language: str
    variant: str
    speed: int
    pitch: int

    @property
    def name(self) -> str:
        """The espeak-ng ``-v`` argument, e.g. ``"en-us+f3"``."""
        return f"{self.language}+{self.variant}"

    def label(self) -> str:
        """A short description, e.g. ``"en-us+f3 s150 p35"``."""
        return f"{self.name} s{self.speed} p{self.pitch}"

    def arguments(self) -> list[str]:
        """espeak-ng's options for this voice."""
        return ["-v", self.name, "-s", str(self.speed), "-p", str(self.pitch)]


@dataclass(frozen=True)
class VoiceSet:
    """The variants, speeds and pitches one split draws its voices from."""

    variants: tuple[str, ...]
    speeds: tuple[int, ...]
    pitches: tuple[int, ...]


#: split -> its voices; variants, speeds and pitches are disjoint between splits
SPLIT_VOICES = {
    "train": VoiceSet(("m1", "m2", "m3", "m6", "m7", "f1", "f2", "f4"), (120, 140, 160, 180),
                      (30, 45, 60, 75)),
    "valid": VoiceSet(("m5", "f5"), (130, 170), (40, 65)),
    "test": VoiceSet(("m4", "f3"), (150, 190), (35, 55, 70)),
}


def draw_voices(split: str, count: int, seed: int) -> list[Voice]:
    """``count`` voices of ``split`` drawn uniformly from its :class:`VoiceSet` and
    :data:`LANGUAGES`, deterministic for ``seed``.

    Raises:
        ValueError: an unknown split.
    """
    if split not in SPLIT_VOICES:
        raise ValueError(f"split must be one of {sorted(SPLIT_VOICES)}, got {split!r}")
    voices = SPLIT_VOICES[split]
    rng = random.Random(f"{split}-{seed}")
    return [
        Voice(rng.choice(LANGUAGES), rng.choice(voices.variants), rng.choice(voices.speeds),
              rng.choice(voices.pitches))
        for _ in range(count)
    ]


def _executable() -> str:
    path = shutil.which(ESPEAK)
    if path is None:
        raise MissingPackageError(
            f"{ESPEAK} is not installed: synthesising speech needs it "
            f"(sudo apt-get install espeak-ng)"
        )
    return path


@lru_cache(maxsize=1)
def espeak_version() -> str:
    """The first line of ``espeak-ng --version`` (part of every cached file's name).

    Raises:
        MissingPackageError: espeak-ng is not installed.
    """
    result = subprocess.run([_executable(), "--version"], capture_output=True, text=True,
                            check=False)
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else "unknown"


def cached_path(text: str, voice: Voice) -> Path:
    """Where the utterance of ``text`` by ``voice`` lives in the cache."""
    key = "\n".join([espeak_version(), voice.label(), text])
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()
    return cache_dir() / "speech" / "espeak" / digest[:2] / f"{digest}.wav"


def synthesize(text: str, voice: Voice, path: str | os.PathLike[str] | None = None) -> Path:
    """Speak ``text`` with ``voice`` into a WAV file (default: the cache); skipped when the
    file already exists. Written to a temporary name and renamed.

    Raises:
        MissingPackageError: espeak-ng is not installed.
        DataError: espeak-ng failed (its message is included) or ``text`` is empty.
    """
    if not text.strip():
        raise DataError("cannot synthesise an empty text")
    out = Path(path) if path is not None else cached_path(text, voice)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".wav", dir=out.parent)
    os.close(fd)
    try:
        result = subprocess.run(
            [_executable(), *voice.arguments(), "-w", tmp, "--", text],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0 or os.path.getsize(tmp) <= 44:
            raise DataError(
                f"{ESPEAK} failed for voice {voice.label()!r} and text {text!r} "
                f"(exit {result.returncode}): {result.stderr.strip() or 'no audio written'}"
            )
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def synthesize_many(
    items: Sequence[tuple[str, Voice]], *, workers: int = 2, progress: bool = True
) -> list[Path]:
    """:func:`synthesize` every ``(text, voice)`` into the cache (``workers`` espeak-ng
    processes at once, a progress bar on stderr when there is work to do); the paths in order.

    Raises:
        as :func:`synthesize`.
    """
    paths = [cached_path(text, voice) for text, voice in items]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    if not todo:
        return paths
    from tqdm.auto import tqdm

    bar = tqdm(  # disable=None: no bar when stderr is not a terminal (CI logs)
        total=len(todo), desc="espeak-ng", unit="utt", disable=None if progress else True,
        leave=False,
    )
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(lambda i: synthesize(*items[i]), todo):
            bar.update(1)
    bar.close()
    return paths
