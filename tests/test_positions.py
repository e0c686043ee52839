"""Positions against their published formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnkit import positions


def test_sinusoidal_formula() -> None:
    pe = positions.sinusoidal(7, 6, start=3).double().numpy()
    for p in range(7):
        for i in range(3):
            angle = (p + 3) / 10000 ** (2 * i / 6)
            assert pe[p, 2 * i] == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[p, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-6)


def test_rotary_rotates_each_pair_by_m_theta() -> None:
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    pos = torch.tensor([0, 1, 4, 9, 100])
    y = positions.rotary(x, pos).numpy()
    xn = x.numpy()
    for m_index, m in enumerate(pos.tolist()):
        for i in range(4):
            theta = 10000 ** (-2 * i / 8)
            z = complex(xn[0, m_index, 2 * i], xn[0, m_index, 2 * i + 1]) * complex(
                math.cos(m * theta), math.sin(m * theta)
            )
            assert y[0, m_index, 2 * i] == pytest.approx(z.real, abs=1e-9)
            assert y[0, m_index, 2 * i + 1] == pytest.approx(z.imag, abs=1e-9)


def test_rotary_scores_depend_only_on_relative_position() -> None:
    q, k = torch.randn(1, 8, dtype=torch.float64), torch.randn(1, 8, dtype=torch.float64)
    a = positions.rotary(q, torch.tensor([5])) @ positions.rotary(k, torch.tensor([2])).T
    b = positions.rotary(q, torch.tensor([13])) @ positions.rotary(k, torch.tensor([10])).T
    torch.testing.assert_close(a, b)


def test_alibi_slopes_power_of_two_and_interleaved() -> None:
    np.testing.assert_allclose(positions.alibi_slopes(8).numpy(), [2.0**-h for h in range(1, 9)])
    # 6 heads: slopes of 4 heads (2^-2, 2^-4, 2^-6, 2^-8), then every other of 8 heads (2^-1, 2^-3)
    np.testing.assert_allclose(
        positions.alibi_slopes(6).numpy(), [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    )


def test_alibi_bias_is_minus_slope_times_distance() -> None:
    bias = positions.alibi_bias(2, 3, 5).numpy()
    slopes = [2**-4, 2**-8]
    for h in range(2):
        for i in range(3):
            for j in range(5):
                p = 5 - 3 + i
                assert bias[h, i, j] == pytest.approx(-slopes[h] * abs(p - j))


def test_errors() -> None:
    with pytest.raises(ValueError, match="head dim must be even"):
        positions.rotary(torch.randn(3, 5), torch.arange(3))
    with pytest.raises(ValueError, match=r"positions must be one of"):
        positions.scheme("learned")
