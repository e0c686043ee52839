"""Speech data sets as train/valid/test lists of ``(wav file, transcript)``, from a data spec.

Specs:

- ``espeak[:KIND][:n=4000,valid=200,test=300,seed=0]``: speech synthesised by espeak-ng
  (:mod:`attnkit.data.speech.synth`) saying KIND = ``mixed`` (default; half number phrases,
  half short sentences), ``numbers`` or ``sentences``. ``n`` training, ``valid`` and ``test``
  utterances. Valid and test use held-out voices, speeds and pitches; their texts of three
  words or more never occur in training.
- ``folder:PATH[:valid=0.1,test=0.1,seed=0]``: your own recordings: ``PATH/transcripts.tsv``
  holds ``file.wav<TAB>transcript[<TAB>speaker]`` lines (paths relative to PATH; ``#``
  comments and blank lines are skipped). With a speaker column the split is by speaker (test
  speakers are never heard in training), otherwise by file. Lines that name a missing file,
  have no transcript, or ``.wav`` files without a line are reported in
  :attr:`SpeechSplits.problems` and skipped; the rest is used.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from attnkit.data.errors import DataError, DataFileNotFoundError
from attnkit.data.speech import synth
from attnkit.data.speech.text import (
    KINDS,
    grammar_words,
    held_out,
    make_texts,
    normalize_transcript,
    vocabulary,
)
from attnkit.data.text import utf8_lines

__all__ = [
    "DEFAULT_SPEECH_SPEC",
    "SpeechSplits",
    "Utterance",
    "describe",
    "describe_vocabulary",
    "espeak_vocabulary",
    "load_speech",
]

DEFAULT_SPEECH_SPEC = "espeak:mixed"
TRANSCRIPTS = "transcripts.tsv"


@dataclass(frozen=True)
class Utterance:
    """One recording: its WAV file, its normalised transcript and who speaks it."""

    path: Path
    text: str
    speaker: str = ""


@dataclass
class SpeechSplits:
    """Train/valid/test utterances of one data spec, and what had to be skipped."""

    name: str
    train: list[Utterance]
    valid: list[Utterance]
    test: list[Utterance]
    problems: list[str] = field(default_factory=list)


def describe() -> str:
    """One line per data source, for ``--help``."""
    return (
        "espeak[:mixed|numbers|sentences][:n=4000,valid=200,test=300,seed=0]: espeak-ng "
        "speech; valid/test use held-out voices, speeds and pitches.\n"
        "folder:PATH[:valid=0.1,test=0.1,seed=0]: PATH/transcripts.tsv lines "
        "'file.wav<TAB>text[<TAB>speaker]'."
    )


def espeak_vocabulary(spec: str) -> list[str] | None:
    """The words an ``espeak`` spec's speech can hold (``None`` for other specs)."""
    source, _, rest = spec.partition(":")
    if source != "espeak":
        return None
    kind, _ = _kind_and_options(rest)
    return vocabulary(kind)


def describe_vocabulary(spec: str = DEFAULT_SPEECH_SPEC) -> str:
    """One paragraph on what a model trained on ``spec`` can recognise (for help and output)."""
    words = espeak_vocabulary(spec)
    if words is None:
        return f"A model trained on {spec} knows the words of its transcripts only."
    kind, _ = _kind_and_options(spec.partition(":")[2])
    parts = {"numbers": "numbers 0 to 999 in words ('four hundred and eighty nine')",
             "sentences": f"sentences of a small grammar of {len(grammar_words())} words ('my "
                          "sister painted two green boxes near the river')"}
    said = " and ".join(v for k, v in parts.items() if kind in (k, "mixed"))
    text = (
        f"A model trained on {spec} knows {len(words)} words: {said}. Other words come out as "
        "the nearest ones it knows."
    )
    if kind != "numbers":
        text += f" The grammar's words: {', '.join(grammar_words())}."
    return text


def load_speech(spec: str = DEFAULT_SPEECH_SPEC, *, progress: bool = True) -> SpeechSplits:
    """The splits of ``spec`` (see the module docstring); espeak audio is synthesised into the
    cache on first use.

    Raises:
        DataError: an unknown source or option, a bad value, or no usable utterance.
        DataFileNotFoundError: a folder or ``transcripts.tsv`` that does not exist.
        MissingPackageError: espeak-ng is not installed.
    """
    if not isinstance(spec, str) or not spec:
        raise DataError(f"data spec must be a non-empty string, got {spec!r}")
    source, _, rest = spec.partition(":")
    if source == "espeak":
        kind, options = _kind_and_options(rest)
        return _espeak(spec, kind, options, progress)
    if source == "folder":
        path, _, opts = rest.partition(":")
        if not path:
            raise DataError(f"folder spec needs a path: 'folder:PATH', got {spec!r}")
        return _folder(spec, Path(path).expanduser(), _options(opts, spec))
    raise DataError(f"unknown speech data source {source!r} in {spec!r}; sources:\n{describe()}")


def _kind_and_options(rest: str) -> tuple[str, dict[str, str]]:
    kind, options = "mixed", ""
    if rest:
        first, _, tail = rest.partition(":")
        if "=" in first:
            options = rest
        else:
            kind, options = first, tail
    if kind not in KINDS:
        raise DataError(f"espeak text kind must be one of {KINDS}, got {kind!r}")
    return kind, _options(options, rest)


def _options(text: str, spec: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key or not value:
            raise DataError(f"options must look like key=value,key=value; got {part!r} in {spec!r}")
        out[key.strip()] = value.strip()
    return out


def _take(options: dict[str, str], key: str, default: float, kind: type, spec: str) -> float:
    if key not in options:
        return default
    try:
        value = kind(options.pop(key))
    except ValueError:
        raise DataError(f"option {key} must be a {kind.__name__} in {spec!r}") from None
    if value < 0:
        raise DataError(f"option {key} must be >= 0 in {spec!r}, got {value}")
    return value


def _no_more(options: dict[str, str], allowed: str, spec: str) -> None:
    if options:
        raise DataError(f"unknown options {sorted(options)} in {spec!r}; allowed: {allowed}")


def _espeak(spec: str, kind: str, options: dict[str, str], progress: bool) -> SpeechSplits:
    n = int(_take(options, "n", 4000, int, spec))
    n_valid = int(_take(options, "valid", 200, int, spec))
    n_test = int(_take(options, "test", 300, int, spec))
    seed = int(_take(options, "seed", 0, int, spec))
    _no_more(options, "n, valid, test, seed", spec)
    if n < 1 or n_valid < 1 or n_test < 1:
        raise DataError(f"n, valid and test must be >= 1 in {spec!r}")
    test_texts = make_texts(kind, n_test, seed * 3 + 2)
    valid_texts = make_texts(kind, n_valid, seed * 3 + 1, exclude=held_out(test_texts))
    train_texts = make_texts(
        kind, n, seed * 3, exclude=held_out(test_texts) | held_out(valid_texts)
    )
    splits = {}
    for split, texts in (("train", train_texts), ("valid", valid_texts), ("test", test_texts)):
        voices = synth.draw_voices(split, len(texts), seed)
        paths = synth.synthesize_many(list(zip(texts, voices, strict=True)), progress=progress)
        splits[split] = [
            Utterance(p, t, v.label()) for p, t, v in zip(paths, texts, voices, strict=True)
        ]
    return SpeechSplits(spec, splits["train"], splits["valid"], splits["test"])


def _folder(spec: str, root: Path, options: dict[str, str]) -> SpeechSplits:
    valid = _take(options, "valid", 0.1, float, spec)
    test = _take(options, "test", 0.1, float, spec)
    seed = int(_take(options, "seed", 0, int, spec))
    _no_more(options, "valid, test, seed", spec)
    if valid + test >= 1:
        raise DataError(f"valid + test must be < 1 in {spec!r}, got {valid} + {test}")
    if not root.is_dir():
        raise DataFileNotFoundError(f"speech folder not found: {root}")
    table = root / TRANSCRIPTS
    if not table.is_file():
        raise DataFileNotFoundError(
            f"{table} not found: a speech folder needs a {TRANSCRIPTS} with "
            f"'file.wav<TAB>transcript' lines"
        )
    utterances, problems = read_transcripts(table)
    listed = {u.path.resolve() for u in utterances}
    for wav in sorted(root.rglob("*.wav")):
        if wav.resolve() not in listed:
            problems.append(f"{wav}: no transcript in {table}; skipped")
    if not utterances:
        raise DataError(f"{table}: no usable utterance ({len(problems)} problems: "
                        f"{'; '.join(problems[:3])})")
    train, valid_set, test_set = _split_by_speaker(utterances, valid, test, seed)
    for name, chosen in (("valid", valid_set), ("test", test_set)):
        if not chosen:
            problems.append(
                f"{root}: too few speakers/files for a {name} split; using the training files"
            )
    return SpeechSplits(spec, train, valid_set or train[:], test_set or train[:], problems)


def read_transcripts(table: Path) -> tuple[list[Utterance], list[str]]:
    """``file.wav<TAB>transcript[<TAB>speaker]`` lines of ``table`` -> utterances, problems.

    Bad lines (no tab, empty transcript, a missing file) are reported, not raised.

    Raises:
        DataError: a line of the table is not UTF-8 (``PATH:LINE`` named).
    """
    lines = [line for _, line in utf8_lines(table)]
    utterances: list[Utterance] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rstrip("\n").split("\t")
        where = f"{table}:{number}"
        if len(fields) < 2:
            problems.append(f"{where}: expected 'file.wav<TAB>transcript', got {line!r}; skipped")
            continue
        name, text = fields[0].strip(), normalize_transcript(fields[1])
        path = (table.parent / name) if not Path(name).is_absolute() else Path(name)
        if not text:
            problems.append(f"{where}: {name} has an empty transcript; skipped")
        elif not path.is_file():
            problems.append(f"{where}: audio file {path} not found; skipped")
        else:
            speaker = fields[2].strip() if len(fields) > 2 else ""
            utterances.append(Utterance(path, text, speaker))
    return utterances, problems


def _split_by_speaker(
    utterances: list[Utterance], valid: float, test: float, seed: int
) -> tuple[list[Utterance], list[Utterance], list[Utterance]]:
    """Split groups (speakers, or single files without a speaker column) by the fractions."""
    by_speaker = any(u.speaker for u in utterances)
    groups: dict[str, list[Utterance]] = {}
    for u in utterances:
        groups.setdefault(u.speaker if by_speaker else str(u.path), []).append(u)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_test = round(test * len(keys)) if test > 0 else 0
    n_valid = round(valid * len(keys)) if valid > 0 else 0
    if len(keys) >= 3:
        n_test, n_valid = max(n_test, 1 if test > 0 else 0), max(n_valid, 1 if valid > 0 else 0)
    n_test = min(n_test, max(0, len(keys) - 1))
    n_valid = min(n_valid, max(0, len(keys) - 1 - n_test))
    test_keys = keys[:n_test]
    valid_keys = keys[n_test : n_test + n_valid]
    train_keys = keys[n_test + n_valid :]

    def gather(chosen: list[str]) -> list[Utterance]:
        return [u for key in chosen for u in groups[key]]

    return gather(train_keys), gather(valid_keys), gather(test_keys)
