"""From WAV files to padded batches of log-mel features and character targets.

Shapes (``B`` utterances, ``T`` longest feature length, ``M`` mel channels, ``L`` longest
transcript + 1)::

    features  (B, T, M) float32  padded with zeros on the right
    lengths   (B,)      int64    real frame counts (>= 1)
    tgt_in    (B, L)    int64    <bos> y_1 .. y_n, padded with <pad>
    tgt_out   (B, L)    int64    y_1 .. y_n <eos>, padded (the labels)
    index     (B,)      int64    position of each utterance in its FeatureSet
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from attnkit.data.cache import cache_dir
from attnkit.data.errors import DataError
from attnkit.data.speech.audio import read_wav, trim_silence
from attnkit.data.speech.corpus import Utterance
from attnkit.data.speech.features import FeatureConfig, log_mel

__all__ = ["FeatureSet", "SpeechBatch", "collate_speech", "file_features", "load_features",
           "speech_batches"]


def file_features(path: str | os.PathLike[str], config: FeatureConfig) -> Tensor:
    """Log-mel features ``(T, M)`` of one WAV file: read (mixed to mono, resampled to
    ``config.sample_rate``), silence trimmed (``config.trim_db``), :func:`log_mel`.

    Raises:
        DataFileNotFoundError, AudioError: as :func:`read_wav` (the file is named).
    """
    audio = read_wav(path, sample_rate=config.sample_rate)
    samples = audio.samples
    if config.trim_db is not None:
        samples = trim_silence(samples, audio.sample_rate, threshold_db=config.trim_db)
    return log_mel(samples, config)


@dataclass
class FeatureSet:
    """Features and transcripts of the utterances that could be read; the others in
    ``problems`` (one line each, naming the file)."""

    features: list[Tensor]
    texts: list[str]
    utterances: list[Utterance]
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.features)


def load_features(
    utterances: Sequence[Utterance],
    config: FeatureConfig,
    *,
    progress: bool = False,
    cache: bool = True,
) -> FeatureSet:
    """:func:`file_features` of every utterance; an unreadable file is skipped and reported in
    ``problems`` (the rest is not lost).

    With ``cache`` the features of this exact list of files (names, sizes, modification
    times) and ``config`` are kept in one safetensors file under ``<cache>/speech/features``
    (written atomically) and read back next time instead of being recomputed.

    Raises:
        DataError: no utterance could be read (the first problems are quoted).
    """
    from tqdm.auto import tqdm

    key = _cache_key(utterances, config) if cache else None
    cached = _read_cached(key) if key is not None else None
    if cached is None:
        computed: list[Tensor | None] = []
        problems: list[str] = []
        bar_off = None if progress else True  # None: no bar when stderr is not a terminal
        for utt in tqdm(utterances, desc="features", unit="utt", disable=bar_off, leave=False):
            try:
                computed.append(file_features(utt.path, config))
            except (DataError, FileNotFoundError, ValueError) as error:
                computed.append(None)
                problems.append(f"{utt.path}: {error}; skipped")
        cached = (computed, problems)
        if key is not None:
            _write_cached(key, *cached)
    out = FeatureSet([], [], [], problems=list(cached[1]))
    for utt, feats in zip(utterances, cached[0], strict=True):
        if feats is not None:
            out.features.append(feats)
            out.texts.append(utt.text)
            out.utterances.append(utt)
    if utterances and not out.features:
        raise DataError(
            f"none of the {len(utterances)} audio files could be read: "
            + "; ".join(out.problems[:3])
        )
    return out


def _cache_key(utterances: Sequence[Utterance], config: FeatureConfig) -> str | None:
    files = []
    for utt in utterances:
        try:
            st = Path(utt.path).stat()
        except OSError:
            return None  # a missing file: nothing worth caching
        files.append([str(utt.path), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"version": _CACHE_VERSION, "config": dataclasses.asdict(config),
                       "files": files})
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


_CACHE_VERSION = 1


def _cache_path(key: str) -> Path:
    return cache_dir() / "speech" / "features" / f"{key}.safetensors"


def _read_cached(key: str) -> tuple[list[Tensor | None], list[str]] | None:
    from safetensors import safe_open

    path = _cache_path(key)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            frames = json.loads(meta["frames"])  # frames per utterance, 0 = unreadable
            problems = json.loads(meta["problems"])
            data = fh.get_tensor("features") if sum(frames) else None  # (ΣT, M)
    except Exception:  # a corrupt or foreign file is ignored and rebuilt, never trusted
        return None
    out: list[Tensor | None] = []
    start = 0
    for count in frames:
        out.append(data[start : start + count].clone() if count and data is not None else None)
        start += count
    return out, problems


def _write_cached(key: str, features: list[Tensor | None], problems: list[str]) -> None:
    from safetensors.torch import save_file

    good = [f for f in features if f is not None]
    if not good:
        return
    path = _cache_path(key)
    meta = {
        "frames": json.dumps([0 if f is None else int(f.shape[0]) for f in features]),
        "problems": json.dumps(problems),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file({"features": torch.cat(good).contiguous()}, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        return  # a cache that cannot be written only costs time


@dataclass(frozen=True)
class SpeechBatch:
    """One padded batch; see the module docstring for shapes."""

    features: Tensor
    lengths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    index: Tensor

    def to(self, device: torch.device | str) -> SpeechBatch:
        """The same batch with every tensor on ``device``."""
        return SpeechBatch(*(t.to(device) for t in (self.features, self.lengths, self.tgt_in,
                                                    self.tgt_out, self.index)))

    @property
    def num_target_tokens(self) -> int:
        """Real (non-pad) label positions in ``tgt_out``."""
        return int((self.tgt_out != 0).sum())


def collate_speech(
    features: Sequence[Tensor],
    targets: Sequence[Sequence[int]] | None = None,
    *,
    indices: Sequence[int] | None = None,
    pad_id: int = 0,
    bos_id: int = 1,
    eos_id: int = 2,
) -> SpeechBatch:
    """Pad ``features`` ``[(T_i, M)]`` and character ids ``targets`` (no ``<bos>``/``<eos>``;
    ``None`` for inference: the targets are then empty) into a :class:`SpeechBatch`.

    Raises:
        ValueError: no features, features of different widths or without frames, or a
            different number of targets.
    """
    if not features:
        raise ValueError("cannot collate an empty list of features")
    widths = {f.shape[-1] for f in features}
    if any(f.dim() != 2 or f.shape[0] < 1 for f in features) or len(widths) != 1:
        raise ValueError(
            f"features must be (frames >= 1, M) with one M, got "
            f"{[tuple(f.shape) for f in features][:5]}"
        )
    targets = [[] for _ in features] if targets is None else targets
    if len(targets) != len(features):
        raise ValueError(f"got {len(targets)} targets for {len(features)} feature matrices")
    b = len(features)
    t_max = max(f.shape[0] for f in features)
    l_max = max(len(t) for t in targets) + 1
    padded = features[0].new_zeros(b, t_max, widths.pop())  # (B, T, M)
    tgt_in = torch.full((b, l_max), pad_id, dtype=torch.long)  # (B, L)
    tgt_out = torch.full((b, l_max), pad_id, dtype=torch.long)  # (B, L)
    for row, (f, t) in enumerate(zip(features, targets, strict=True)):
        padded[row, : f.shape[0]] = f
        tgt_in[row, : len(t) + 1] = torch.tensor([bos_id, *t], dtype=torch.long)
        tgt_out[row, : len(t) + 1] = torch.tensor([*t, eos_id], dtype=torch.long)
    idx = list(range(b)) if indices is None else list(indices)
    return SpeechBatch(
        features=padded,
        lengths=torch.tensor([f.shape[0] for f in features], dtype=torch.long),  # (B,)
        tgt_in=tgt_in,
        tgt_out=tgt_out,
        index=torch.tensor(idx, dtype=torch.long),  # (B,)
    )


def speech_batches(
    lengths: Sequence[int],
    *,
    batch_size: int,
    generator: torch.Generator | None = None,
    pool_batches: int = 20,
) -> list[list[int]]:
    """Group utterance indices into batches of similar lengths.

    With a ``generator``: shuffle, sort each pool of ``pool_batches`` batches' worth by length,
    cut, and shuffle the batches (deterministic for the generator's state). Without one:
    consecutive slices in the given order (evaluation).

    Raises:
        ValueError: ``batch_size`` < 1 or no lengths.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = len(lengths)
    if n == 0:
        raise ValueError("cannot batch an empty list of utterances")
    if generator is None:
        return [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    order = torch.randperm(n, generator=generator).tolist()
    pool = batch_size * pool_batches
    bucketed: list[int] = []
    for start in range(0, n, pool):
        bucketed.extend(sorted(order[start : start + pool], key=lambda i: lengths[i]))
    groups = [bucketed[i : i + batch_size] for i in range(0, n, batch_size)]
    return [groups[j] for j in torch.randperm(len(groups), generator=generator).tolist()]
