"""Reading and writing WAV files with Python's ``wave`` module and NumPy (no torchaudio).

Integer PCM of 8, 16, 24 or 32 bits is read as float32 in ``[-1, 1)``. Several channels are
mixed down to one by averaging them (``mix="mean"``) or refused (``mix="refuse"``). A sample
rate other than the one asked for is converted by polyphase resampling
(:func:`scipy.signal.resample_poly`, a windowed-sinc anti-aliasing filter), never silently.

Shape legend: N samples, Ch channels.
"""

from __future__ import annotations

import math
import os
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnkit.data.errors import DataError, DataFileNotFoundError

__all__ = ["Audio", "AudioError", "read_wav", "resample", "trim_silence", "write_wav"]

MIX_MODES = ("mean", "refuse")


class AudioError(DataError):
    """An audio file that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Audio:
    """Mono samples ``(N,)`` float32 in ``[-1, 1)`` at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return len(self.samples) / self.sample_rate


def read_wav(
    path: str | os.PathLike[str], *, sample_rate: int | None = None, mix: str = "mean"
) -> Audio:
    """Read a PCM WAV file as mono float32.

    Args:
        path: the ``.wav`` file.
        sample_rate: resample to this rate (Hz) when the file has another; ``None`` keeps the
            file's rate.
        mix: ``"mean"`` averages the channels of a multi-channel file; ``"refuse"`` raises.

    Returns:
        :class:`Audio` with ``samples (N,)``.

    Raises:
        DataFileNotFoundError: the file does not exist.
        AudioError: not a WAV file, a compressed or floating-point WAV, no samples, or several
            channels with ``mix="refuse"`` (the file is named in every message).
        ValueError: a bad ``sample_rate`` or ``mix``.
    """
    if mix not in MIX_MODES:
        raise ValueError(f"mix must be one of {MIX_MODES}, got {mix!r}")
    if sample_rate is not None and (
        isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1
    ):
        raise ValueError(f"sample_rate must be a positive integer or None, got {sample_rate!r}")
    p = Path(path)
    if not p.is_file():
        raise DataFileNotFoundError(f"audio file not found: {p}")
    try:
        with wave.open(str(p), "rb") as fh:
            channels, width, rate = fh.getnchannels(), fh.getsampwidth(), fh.getframerate()
            raw = fh.readframes(fh.getnframes())
    except (wave.Error, EOFError) as error:
        raise AudioError(
            f"{p}: not a readable PCM WAV file ({error}); convert it, e.g. "
            f"'ffmpeg -i {p.name} -acodec pcm_s16le out.wav'"
        ) from None
    except OSError as error:
        raise AudioError(f"{p}: cannot be read ({error})") from None
    if width not in (1, 2, 3, 4):
        raise AudioError(f"{p}: {8 * width}-bit samples are not supported (8, 16, 24, 32 are)")
    if channels < 1 or rate < 1:
        raise AudioError(f"{p}: bad header ({channels} channels at {rate} Hz)")
    count = len(raw) // (width * channels)
    if count == 0:
        raise AudioError(f"{p}: holds no samples")
    samples = _decode(raw[: count * width * channels], width).reshape(count, channels)  # (N, Ch)
    if channels > 1:
        if mix == "refuse":
            raise AudioError(
                f"{p}: has {channels} channels; give a mono file (or mix='mean' to average them)"
            )
        mono = samples.mean(axis=1)  # (N,)
    else:
        mono = samples[:, 0]  # (N,)
    audio = Audio(mono.astype(np.float32), rate)
    if sample_rate is not None and rate != sample_rate:
        audio = Audio(resample(audio.samples, rate, sample_rate), sample_rate)
    return audio


def _decode(raw: bytes, width: int) -> np.ndarray:
    """Little-endian PCM bytes -> float64 in ``[-1, 1)``."""
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if width == 3:  # 24-bit: sign-extend three bytes into int32
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float64) / float(1 << 23)
    dtype = np.dtype("<i2") if width == 2 else np.dtype("<i4")
    return np.frombuffer(raw, dtype=dtype).astype(np.float64) / float(1 << (8 * width - 1))


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling by the reduced ratio ``to_rate / from_rate``
    (:func:`scipy.signal.resample_poly`, Kaiser-windowed FIR anti-aliasing filter).

    ``samples (N,)`` -> ``(ceil(N · to_rate / from_rate),)`` float32.

    Raises:
        ValueError: a rate < 1.
    """
    from scipy.signal import resample_poly  # lazy: scipy is heavy

    if from_rate < 1 or to_rate < 1:
        raise ValueError(f"sample rates must be positive, got {from_rate} and {to_rate}")
    if from_rate == to_rate:
        return samples.astype(np.float32)
    g = math.gcd(from_rate, to_rate)
    return resample_poly(samples, to_rate // g, from_rate // g).astype(np.float32)


def trim_silence(
    samples: np.ndarray, sample_rate: int, *, threshold_db: float = -40.0, margin: float = 0.05
) -> np.ndarray:
    """Cut leading and trailing silence: everything before the first and after the last 10 ms
    frame whose RMS is within ``threshold_db`` of the loudest frame, keeping ``margin`` seconds.

    ``samples (N,)`` -> ``(N',)``; all-silent audio is returned unchanged.
    """
    frame = max(1, sample_rate // 100)
    count = len(samples) // frame
    if count == 0:
        return samples
    frames = samples[: count * frame].astype(np.float64).reshape(count, frame)  # (F, frame)
    rms = np.sqrt((frames**2).mean(axis=1))  # (F,)
    peak = rms.max()
    if peak <= 0:
        return samples
    loud = np.nonzero(rms >= peak * 10 ** (threshold_db / 20))[0]
    keep = int(margin * sample_rate)
    start = max(0, loud[0] * frame - keep)
    end = min(len(samples), (loud[-1] + 1) * frame + keep)
    return samples[start:end]


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float samples ``(N,)`` in ``[-1, 1]`` as 16-bit PCM, atomically (a temporary
    file in the same folder, renamed). Returns the path.

    Raises:
        ValueError: not 1-D, non-finite samples, or a bad rate.
    """
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim != 1 or not np.isfinite(data).all():
        raise ValueError(f"samples must be 1-D finite floats, got shape {data.shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    pcm = np.clip(np.round(data * 32767.0), -32768, 32767).astype("<i2")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, wave.open(raw, "wb") as fh:
            fh.setnchannels(1)
            fh.setsampwidth(2)
            fh.setframerate(sample_rate)
            fh.writeframes(pcm.tobytes())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
