"""training.correlation: the per-band split of the correlation coefficient."""

from __future__ import annotations

import numpy as np
import torch
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


def test_pitch_errors_are_measured_on_frames_both_call_voiced():
    from conftest import make_tiny_codec
    from training.correlation import pitch_errors

    codec = make_tiny_codec("harmonic")
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    with torch.no_grad():
        codec.model.decoder.head.pitch.net[-1].bias.copy_(torch.tensor([0.0, 5.0]))  # always voiced
    errors = pitch_errors(codec, tone, levels=2)
    assert len(errors) > 50 and np.isfinite(errors).all()
    # an untrained head predicts the middle of its log range, not 180 Hz
    middle = np.exp((np.log(60) + np.log(400)) / 2)
    assert np.median(errors) > 0.5 * abs(np.log(middle / 180))
    assert len(pitch_errors(codec, np.zeros(16000, np.float32), levels=None)) == 0  # silence: nothing voiced


def test_quantized_track_keeps_one_rounded_value_per_code_frame_and_interpolates():
    from training.correlation import quantized_track

    log_f0 = torch.log(torch.tensor([[200.0, 201.0, 204.0, 203.0, 210.0]], dtype=torch.float64) / 16000)
    assert torch.equal(quantized_track(log_f0, None, 2), log_f0)
    q = quantized_track(log_f0, 0.01, 2)
    kept = torch.round(log_f0[:, ::2] / 0.01) * 0.01
    assert torch.allclose(q[:, ::2], kept)
    assert torch.allclose(q[:, 1], (kept[:, 0] + kept[:, 1]) / 2) and torch.allclose(q[:, 3], (kept[:, 1] + kept[:, 2]) / 2)
    assert (q - log_f0)[:, ::2].abs().max() <= 0.005 + 1e-12  # the kept frames: within half a step


def test_a_given_pitch_replaces_the_predicted_one_on_masked_frames_only():
    from conftest import make_tiny_codec

    model = make_tiny_codec("harmonic").model
    with torch.no_grad():
        model.decoder.head.pitch.net[-1].bias.copy_(torch.tensor([0.0, 5.0]))  # voiced everywhere
    latents = torch.randn(1, model.config.quantizer.dim, 20)
    plain = model.decoder.head_output(latents)
    given = torch.full_like(plain.log_f0, float(np.log(123.0 / 16000)))
    mask = torch.zeros_like(plain.log_f0, dtype=torch.bool)
    mask[:, 10:] = True
    out = model.decoder.head_output(latents, pitch=(given, mask))
    assert torch.equal(out.log_f0[:, :10], plain.log_f0[:, :10])
    assert torch.allclose(out.log_f0[:, 10:], given[:, 10:])
    assert not torch.allclose(out.spectrum[..., 12:], plain.spectrum[..., 12:])
    direct = make_tiny_codec("direct").model
    with pytest.raises(ValueError, match="harmonic"):
        direct.decoder.head_output(latents, pitch=(given, mask))
