"""Log-mel spectrograms computed with torch: STFT, a triangular mel filter bank, log, and
per-utterance normalisation.

- Frames: ``torch.stft`` with a periodic Hann window of ``win_length`` samples, ``n_fft``-point
  DFT, hop ``hop_length``, centred (the signal is zero-padded by ``n_fft // 2`` on both sides,
  so frame ``t`` is centred on sample ``t · hop``); ``1 + N // hop`` frames.
- Power spectrum ``|X_t(k)|²`` for the ``n_fft // 2 + 1`` bins ``k · sr / n_fft`` Hz.
- Mel filter bank: ``n_mels`` triangles whose corners are equally spaced on the mel scale
  between ``f_min`` and ``f_max``: HTK ``m = 2595 log10(1 + f / 700)``, or Slaney's (linear
  ``f / (200/3)`` below 1 kHz, ``15 + 27 ln(f / 1000) / ln 6.4`` above); with ``norm="slaney"``
  each triangle is scaled by ``2 / (f_{m+1} − f_{m−1})`` (equal area).
- ``log(mel + floor)``, then per-utterance normalisation: each mel channel gets zero mean and
  unit variance over the utterance's frames (removes loudness and channel colouring).

Shape legend: N samples, T frames, K frequency bins (``n_fft // 2 + 1``), M mel channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from attnkit._validate import check_positive_fields, check_positive_ints

__all__ = [
    "FeatureConfig",
    "hz_to_mel",
    "log_mel",
    "mel_filterbank",
    "mel_to_hz",
    "normalize_utterance",
]

MEL_SCALES = ("htk", "slaney")


def hz_to_mel(freq: Tensor, scale: str = "htk") -> Tensor:
    """Hertz to mels on the HTK or Slaney scale (see the module docstring)."""
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    _check_scale(scale)
    linear = freq / (200.0 / 3.0)
    log = 15.0 + 27.0 * torch.log(torch.clamp(freq, min=1e-10) / 1000.0) / math.log(6.4)
    return torch.where(freq >= 1000.0, log, linear)


def mel_to_hz(mel: Tensor, scale: str = "htk") -> Tensor:
    """Mels to Hertz: the inverse of :func:`hz_to_mel`."""
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    _check_scale(scale)
    linear = mel * (200.0 / 3.0)
    log = 1000.0 * torch.exp((mel - 15.0) * math.log(6.4) / 27.0)
    return torch.where(mel >= 15.0, log, linear)


def _check_scale(scale: str) -> None:
    if scale not in MEL_SCALES:
        raise ValueError(f"mel scale must be one of {MEL_SCALES}, got {scale!r}")


def mel_filterbank(
    n_mels: int,
    n_fft: int,
    sample_rate: int,
    *,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: str = "htk",
    norm: str | None = None,
) -> Tensor:
    """Triangular mel filters ``(K, M)`` float64, ``K = n_fft // 2 + 1``: ``power (T, K) @ fb``
    gives the mel energies ``(T, M)``.

    Filter ``m`` rises linearly from corner ``f_{m-1}`` to ``f_m`` and falls to ``f_{m+1}``
    (in Hz), the ``M + 2`` corners being equally spaced in mels from ``f_min`` to ``f_max``.

    Raises:
        ValueError: sizes < 1, ``f_min``/``f_max`` outside ``0 ≤ f_min < f_max ≤ sr / 2``,
            an unknown ``scale`` or ``norm``.
    """
    _check_scale(scale)
    if norm not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    check_positive_ints(n_mels=n_mels, n_fft=n_fft, sample_rate=sample_rate)
    top = sample_rate / 2 if f_max is None else float(f_max)
    if not 0.0 <= f_min < top <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}, got f_min "
            f"{f_min}, f_max {top}"
        )
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (K,)
    lo, hi = hz_to_mel(torch.tensor([f_min, top], dtype=torch.float64), scale)
    corners = mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64),
                        scale)  # (M + 2,)
    left, centre, right = corners[:-2], corners[1:-1], corners[2:]  # (M,) each
    rising = (freqs[:, None] - left) / (centre - left)  # (K, M)
    falling = (right - freqs[:, None]) / (right - centre)  # (K, M)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (K, M)
    if norm == "slaney":
        fb = fb * (2.0 / (right - left))
    return fb


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes features (saved with a trained model: it must not change).

    Attributes:
        sample_rate: audio is resampled to this rate (Hz) first.
        n_fft: DFT size; ``win_length``: Hann window length; ``hop_length``: frame step
            (defaults: 25 ms windows every 10 ms at 16 kHz).
        n_mels: mel channels M; ``f_min``/``f_max``: the filter bank's range (``None``: sr/2).
        mel_scale: ``"htk"`` or ``"slaney"``; ``mel_norm``: ``None`` or ``"slaney"``.
        floor: added before the log, ``log(mel + floor)`` (never ``log 0``).
        normalize: per-utterance zero mean / unit variance per mel channel.
        trim_db: cut leading/trailing audio quieter than this (dB under the loudest 10 ms);
            ``None`` keeps everything.

    Raises:
        ValueError: a size < 1, ``win_length > n_fft``, bad frequencies or scale.
    """

    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float | None = 7600.0
    mel_scale: str = "htk"
    mel_norm: str | None = None
    floor: float = 1e-6
    normalize: bool = True
    trim_db: float | None = -40.0

    def __post_init__(self) -> None:
        check_positive_fields(self, ("hop_length", "win_length"))
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if not self.floor > 0:
            raise ValueError(f"floor must be > 0, got {self.floor}")
        self.filterbank()  # validates the rest

    def filterbank(self) -> Tensor:
        """The ``(K, M)`` mel filter bank of this configuration (float64)."""
        return mel_filterbank(
            self.n_mels, self.n_fft, self.sample_rate, f_min=self.f_min, f_max=self.f_max,
            scale=self.mel_scale, norm=self.mel_norm,
        )


def log_mel(samples: Tensor | np.ndarray, config: FeatureConfig) -> Tensor:
    """Log-mel features of mono audio at ``config.sample_rate``: ``(N,) -> (T, M)`` float32,
    ``T = 1 + N // hop_length``, normalised per utterance when ``config.normalize``.

    Raises:
        ValueError: not 1-D, empty, or non-finite samples.
    """
    x = torch.as_tensor(samples)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"samples must be 1-D and non-empty, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"samples must be floating point, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("samples contain NaN or infinity")
    x = x.float()
    window = torch.hann_window(config.win_length, periodic=True, device=x.device)
    spec = torch.stft(
        x,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )  # (K, T)
    power = spec.real**2 + spec.imag**2  # (K, T)
    fb = _cached_filterbank(config).to(device=x.device)  # (K, M)
    mel = torch.matmul(power.transpose(0, 1), fb)  # (T, M)
    features = torch.log(mel + config.floor)  # (T, M)
    return normalize_utterance(features) if config.normalize else features


_FILTERBANKS: dict[FeatureConfig, Tensor] = {}


def _cached_filterbank(config: FeatureConfig) -> Tensor:
    if config not in _FILTERBANKS:
        _FILTERBANKS[config] = config.filterbank().float()
    return _FILTERBANKS[config]


def normalize_utterance(features: Tensor, eps: float = 1e-5) -> Tensor:
    """Zero mean and unit variance of each channel over the frames: ``(T, M) -> (T, M)``.
    A constant channel becomes 0 (never NaN); one frame becomes all zeros."""
    if features.dim() != 2:
        raise ValueError(f"features must be (frames, channels), got {tuple(features.shape)}")
    mean = features.mean(dim=0, keepdim=True)  # (1, M)
    std = features.std(dim=0, unbiased=False, keepdim=True)  # (1, M)
    return (features - mean) / (std + eps)
