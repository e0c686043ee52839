"""WAV reading with ``wave`` + NumPy: sample formats, channels, resampling, bad files."""

from __future__ import annotations

import struct
import wave

import numpy as np
import pytest

from attnkit.data.errors import DataFileNotFoundError
from attnkit.data.speech.audio import AudioError, read_wav, resample, trim_silence, write_wav


def raw_wav(path, frames: bytes, *, channels: int, width: int, rate: int) -> None:
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(channels)
        fh.setsampwidth(width)
        fh.setframerate(rate)
        fh.writeframes(frames)


def test_16_bit_round_trip(tmp_path) -> None:
    x = np.sin(np.linspace(0, 20, 1000)) * 0.5
    path = write_wav(tmp_path / "a.wav", x, 8000)
    audio = read_wav(path)
    assert audio.sample_rate == 8000 and audio.samples.dtype == np.float32
    np.testing.assert_allclose(audio.samples, x, atol=1 / 32767)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


@pytest.mark.parametrize(
    "width, encoded, expected",
    [
        (1, bytes([0, 128, 255]), [-1.0, 0.0, 127 / 128]),  # unsigned 8-bit
        (2, struct.pack("<3h", -32768, 0, 16384), [-1.0, 0.0, 0.5]),
        (3, bytes([0, 0, 0x80, 0, 0, 0, 0xFF, 0xFF, 0x3F]), [-1.0, 0.0, (0x3FFFFF) / 2**23]),
        (4, struct.pack("<3i", -(2**31), 0, 2**30), [-1.0, 0.0, 0.5]),
    ],
)
def test_integer_sample_widths(tmp_path, width, encoded, expected) -> None:
    raw_wav(tmp_path / "w.wav", encoded, channels=1, width=width, rate=8000)
    np.testing.assert_allclose(read_wav(tmp_path / "w.wav").samples, expected, atol=1e-7)


def test_stereo_is_mixed_down_or_refused(tmp_path) -> None:
    frames = struct.pack("<4h", 16384, -16384, 8192, 8192)  # (L, R) pairs
    raw_wav(tmp_path / "s.wav", frames, channels=2, width=2, rate=8000)
    np.testing.assert_allclose(read_wav(tmp_path / "s.wav").samples, [0.0, 0.25])
    with pytest.raises(AudioError, match=r"s\.wav: has 2 channels"):
        read_wav(tmp_path / "s.wav", mix="refuse")


def test_resampling_keeps_the_pitch_and_duration(tmp_path) -> None:
    rate = 22050
    t = np.arange(rate) / rate
    write_wav(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), rate)
    audio = read_wav(tmp_path / "tone.wav", sample_rate=16000)
    assert audio.sample_rate == 16000 and len(audio.samples) == 16000
    # Independent check: project onto 16 kHz sinusoids of 440 Hz and 880 Hz.
    n = np.arange(2000, 14000) / 16000
    s = audio.samples[2000:14000]
    power = {f: abs(np.sum(s * np.exp(-2j * np.pi * f * n))) for f in (440, 880)}
    assert power[440] > 100 * power[880]
    assert abs(np.abs(s).max() - 0.5) < 0.02


def test_resample_identity_and_bad_rates() -> None:
    x = np.ones(10, dtype=np.float64)
    assert resample(x, 8000, 8000).dtype == np.float32
    with pytest.raises(ValueError, match="positive"):
        resample(x, 0, 8000)


def test_trim_silence_keeps_the_speech_and_a_margin() -> None:
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(rate // 2) / rate)
    x = np.concatenate([np.zeros(rate), tone, np.zeros(rate)]).astype(np.float32)
    out = trim_silence(x, rate, margin=0.05)
    assert rate // 2 <= len(out) <= rate // 2 + 2 * int(0.05 * rate) + 2 * (rate // 100)
    silent = np.zeros(500, dtype=np.float32)
    assert trim_silence(silent, rate) is silent


def test_bad_files_are_named(tmp_path) -> None:
    with pytest.raises(DataFileNotFoundError, match=r"missing\.wav"):
        read_wav(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(AudioError, match=r"text\.wav: not a readable PCM WAV"):
        read_wav(tmp_path / "text.wav")
    # A 32-bit float WAV (format tag 3): the wave module refuses it; we say what to do.
    data = struct.pack("<2f", 0.1, -0.1)
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 3, 1, 8000, 32000, 4, 32
    ) + b"data" + struct.pack("<I", len(data))
    (tmp_path / "float.wav").write_bytes(header + data)
    with pytest.raises(AudioError, match=r"float\.wav: .*convert"):
        read_wav(tmp_path / "float.wav")
    raw_wav(tmp_path / "empty.wav", b"", channels=1, width=2, rate=8000)
    with pytest.raises(AudioError, match=r"empty\.wav: holds no samples"):
        read_wav(tmp_path / "empty.wav")
    with pytest.raises(ValueError, match="mix"):
        read_wav(tmp_path / "empty.wav", mix="left")
