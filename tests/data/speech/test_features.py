"""Log-mel features against an independent NumPy computation: an explicit DFT (no FFT) of
Hann-windowed, zero-padded frames, and the mel triangles built from the published formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnkit.data.speech.features import (
    FeatureConfig,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
    normalize_utterance,
)


def htk_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def htk_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def slaney_mel(f):
    f = np.asarray(f, dtype=np.float64)
    out = f / (200.0 / 3.0)
    above = f >= 1000.0
    out[above] = 15.0 + 27.0 * np.log(f[above] / 1000.0) / np.log(6.4)
    return out


def slaney_hz(m):
    m = np.asarray(m, dtype=np.float64)
    out = m * (200.0 / 3.0)
    above = m >= 15.0
    out[above] = 1000.0 * np.exp((m[above] - 15.0) * np.log(6.4) / 27.0)
    return out


def np_filterbank(n_mels, n_fft, sr, f_min, f_max, to_mel, to_hz, area_norm=False):
    """Triangle m: 0 at corner m-1, 1 at corner m, 0 at corner m+1 (corners equally spaced in mels)."""
    corners = to_hz(np.linspace(to_mel(np.array([f_min]))[0], to_mel(np.array([f_max]))[0], n_mels + 2))
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for k in range(n_fft // 2 + 1):
        f = k * sr / n_fft
        for m in range(n_mels):
            lo, mid, hi = corners[m], corners[m + 1], corners[m + 2]
            if lo < f <= mid:
                fb[k, m] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                fb[k, m] = (hi - f) / (hi - mid)
            if area_norm:
                fb[k, m] *= 2.0 / (hi - lo)
    return fb


def np_log_mel(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    n_fft, hop, win = cfg.n_fft, cfg.hop_length, cfg.win_length
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    window = np.pad(window, ((n_fft - win) // 2, n_fft - win - (n_fft - win) // 2))
    padded = np.pad(x.astype(np.float64), n_fft // 2)
    frames = 1 + len(x) // hop
    k = np.arange(n_fft // 2 + 1)[:, None]
    n = np.arange(n_fft)[None, :]
    dft = np.exp(-2j * np.pi * k * n / n_fft)  # the DFT matrix, written out
    fb = np_filterbank(cfg.n_mels, n_fft, cfg.sample_rate, cfg.f_min, cfg.f_max or cfg.sample_rate / 2, htk_mel, htk_hz)
    out = np.zeros((frames, cfg.n_mels))
    for t in range(frames):
        frame = padded[t * hop : t * hop + n_fft] * window
        power = np.abs(dft @ frame) ** 2
        out[t] = np.log(power @ fb + cfg.floor)
    return out


@pytest.mark.parametrize("scale", ["htk", "slaney"])
def test_mel_scale_round_trips_and_matches_the_formula(scale: str) -> None:
    f = torch.tensor([0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0], dtype=torch.float64)
    expected = htk_mel(f.numpy()) if scale == "htk" else slaney_mel(f.numpy())
    np.testing.assert_allclose(hz_to_mel(f, scale).numpy(), expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f, scale), scale).numpy(), f.numpy(), atol=1e-6)
    assert math.isclose(float(hz_to_mel(torch.tensor(1000.0), "htk")), 1000.0, rel_tol=1e-3)


@pytest.mark.parametrize(
    "scale, norm", [("htk", None), ("slaney", None), ("slaney", "slaney")]
)
def test_filterbank_matches_the_triangles(scale, norm) -> None:
    to_mel, to_hz = (htk_mel, htk_hz) if scale == "htk" else (slaney_mel, slaney_hz)
    got = mel_filterbank(12, 256, 8000, f_min=50.0, f_max=3800.0, scale=scale, norm=norm)
    expected = np_filterbank(12, 256, 8000, 50.0, 3800.0, to_mel, to_hz, area_norm=norm == "slaney")
    assert got.shape == (129, 12)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


def test_log_mel_matches_a_numpy_dft() -> None:
    cfg = FeatureConfig(sample_rate=8000, n_fft=128, win_length=100, hop_length=40, n_mels=10,
                        f_min=0.0, f_max=4000.0, normalize=False)
    rng = np.random.default_rng(0)
    t = np.arange(1003) / 8000
    x = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(len(t))
    got = log_mel(torch.tensor(x, dtype=torch.float32), cfg)
    expected = np_log_mel(x, cfg)
    assert got.shape == (1 + 1003 // 40, 10)
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4, rtol=1e-4)


def test_a_tone_lights_up_its_mel_channel() -> None:
    cfg = FeatureConfig(normalize=False)
    t = np.arange(16000) / 16000
    feats = log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32), cfg)
    fb = cfg.filterbank().numpy()
    expected = int(np.argmax(fb[round(1000 * cfg.n_fft / 16000)]))
    assert int(feats[50].argmax()) == expected


def test_per_utterance_normalisation() -> None:
    feats = torch.randn(50, 8) * 3 + 7
    feats[:, 2] = 4.0  # a constant channel
    out = normalize_utterance(feats)
    np.testing.assert_allclose(out.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[:, [0, 1, 3]].std(0, unbiased=False).numpy(), 1.0, atol=1e-3)
    assert torch.equal(out[:, 2], torch.zeros(50))
    assert torch.isfinite(normalize_utterance(torch.ones(1, 4))).all()
    # Loudness does not change normalised features: log(g² P) = log P + 2 log g.
    cfg = FeatureConfig(floor=1e-12)
    x = np.random.default_rng(1).standard_normal(4000).astype(np.float32)
    torch.testing.assert_close(log_mel(x, cfg), log_mel(3 * x, cfg), atol=1e-3, rtol=1e-3)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="1-D and non-empty"):
        log_mel(np.zeros((2, 10), dtype=np.float32), FeatureConfig())
    with pytest.raises(ValueError, match="NaN"):
        log_mel(np.array([0.0, float("nan")]), FeatureConfig())
    with pytest.raises(ValueError, match="f_max"):
        FeatureConfig(f_max=9000.0)
    with pytest.raises(ValueError, match="win_length"):
        FeatureConfig(win_length=512)
    with pytest.raises(ValueError, match="mel scale"):
        FeatureConfig(mel_scale="bark")
