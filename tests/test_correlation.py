"""training.correlation: the per-band split of the correlation coefficient."""

from __future__ import annotations

import numpy as np
import pytest

from training.correlation import band_correlation
from training.metrics import si_sdr


@pytest.mark.parametrize("n", [16000, 15999])
def test_bands_sum_to_the_correlation_coefficient(n):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n)
    y = 0.3 * x + rng.standard_normal(n)
    rho = float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
    assert band_correlation(x, y).sum() == pytest.approx(rho, abs=1e-9)
    # and SI-SDR is a function of it alone
    assert si_sdr(x, y) == pytest.approx(10 * np.log10(rho**2 / (1 - rho**2)), abs=1e-3)


def test_a_tone_in_phase_shows_in_its_band_only_and_one_in_quadrature_nowhere():
    t = np.arange(16000) / 16000
    low = np.sin(2 * np.pi * 300 * t)
    high = np.sin(2 * np.pi * 2000 * t)
    reference = low + high
    in_phase = band_correlation(reference, low)  # the 300 Hz part matches exactly
    assert in_phase[2] == pytest.approx(1 / np.sqrt(2), abs=1e-6)  # band 200-400 Hz
    assert np.abs(np.delete(in_phase, 2)).max() < 1e-6
    quadrature = band_correlation(reference, np.cos(2 * np.pi * 300 * t))
    assert np.abs(quadrature).max() < 1e-6
