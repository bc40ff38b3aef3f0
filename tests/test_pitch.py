"""The f0 tracker that labels training audio, and the harmonic head's phase."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from codec.decoder import ISTFTHead
from codec.pitch import estimate_f0, harmonic_phase
from training.losses import pitch_loss

SR, N_FFT, HOP = 16000, 640, 160
LOW, HIGH = 60 / SR, 400 / SR


def harmonic_tone(f0_hz: np.ndarray) -> torch.Tensor:
    """Harmonics 1-10 of a per-sample f0 track, 1/h amplitudes -> [1, T] float64."""
    phase = 2 * np.pi * np.cumsum(f0_hz) / SR
    return torch.from_numpy(sum(np.sin(h * phase + h) / h for h in range(1, 11)) * 0.3)[None]


def test_tracker_follows_a_gliding_voice():
    t = np.arange(2 * SR) / SR
    f0 = 150 * 2 ** np.sin(2 * np.pi * 0.7 * t)  # 75-300 Hz
    track = estimate_f0(harmonic_tone(f0), N_FFT, HOP, LOW, HIGH)
    frames = track.f0.shape[-1]
    truth = torch.from_numpy(f0[np.clip(np.arange(frames) * HOP + HOP // 2, 0, len(f0) - 1)])
    inner = slice(3, frames - 3)  # frames that overhang the ends see padding
    assert track.voiced[0, inner].all()
    error = (track.f0[0, inner] * SR / truth[inner] - 1).abs()
    assert error.median() < 0.005 and (error < 0.02).float().mean() > 0.97


def test_tracker_calls_noise_and_silence_unvoiced():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, SR, generator=g, dtype=torch.float64) * 0.1
    assert estimate_f0(noise, N_FFT, HOP, LOW, HIGH).voiced.float().mean() < 0.05
    assert not estimate_f0(torch.zeros(1, SR, dtype=torch.float64), N_FFT, HOP, LOW, HIGH).voiced.any()


def test_harmonic_phase_gives_each_bin_its_nearest_harmonic():
    f0 = torch.full((1, 3), 175 / SR, dtype=torch.float64)
    theta = torch.tensor([[0.3, 1.1, 2.0]], dtype=torch.float64)
    phase = harmonic_phase(f0, theta, N_FFT)  # bins 25 Hz apart: bin 14 is 350 Hz, harmonic 2
    expected = torch.remainder(math.pi * 14 + 2 * theta[0], 2 * math.pi)
    assert torch.allclose(phase[0, 14], expected)
    assert torch.allclose(phase[0, 0], torch.zeros(3, dtype=torch.float64) + torch.remainder(theta[0], 2 * math.pi))


def test_harmonic_head_renders_a_pitch_off_the_frame_rate_grid():
    # Identical frames lit around 175 Hz with the pitch head held at 175 Hz and voiced: the
    # running phase moves the partial to 175 Hz, where a per-frame phase could only give 100 or 200.
    head = ISTFTHead(channels=1, n_fft=N_FFT, hop=HOP, pitch_range=(LOW, HIGH))
    with torch.no_grad():
        for module in (head.proj, head.pitch.net[0], head.pitch.net[2], head.pitch.net[4]):
            module.weight.zero_()
            module.bias.zero_()
        head.proj.bias[: N_FFT // 2 + 1] = -20.0
        head.proj.bias[6:9] = 0.0
        fraction = (math.log(175 / SR) - math.log(LOW)) / (math.log(HIGH) - math.log(LOW))
        head.pitch.net[4].bias[0] = math.log(fraction / (1 - fraction))
        head.pitch.net[4].bias[1] = 5.0
        out = head(torch.ones(1, 1, 200))[0, 0].numpy()
    middle = out[len(out) // 4 : 3 * len(out) // 4]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    assert np.fft.rfftfreq(len(middle), 1 / SR)[spectrum.argmax()] == pytest.approx(175, abs=1)


def test_pitch_loss_rewards_the_trackers_pitch_and_voicing():
    t = np.arange(SR) / SR
    x = harmonic_tone(np.full(len(t), 200.0)).float()[:, None]
    frames = SR // HOP
    right = torch.full((1, frames), math.log(200 / SR))
    voiced = torch.full((1, frames), 8.0)
    good = pitch_loss(right, voiced, x, N_FFT, HOP, LOW, HIGH)
    assert good.item() < 0.05
    assert pitch_loss(right + math.log(1.5), voiced, x, N_FFT, HOP, LOW, HIGH) > good + 0.3
    assert pitch_loss(right, -voiced, x, N_FFT, HOP, LOW, HIGH) > good + 5


def test_tracker_reports_only_pitches_inside_its_range():
    # Low-passed noise has an autocorrelation still falling at the shortest lag searched; a
    # maximum there is no peak, and parabolic interpolation would put it outside the range.
    noise = np.convolve(np.random.default_rng(0).normal(size=4 * SR), np.hanning(40), "same")
    track = estimate_f0(torch.from_numpy(noise)[None], N_FFT, HOP, LOW, HIGH)
    f0 = track.f0[track.voiced]
    assert len(f0) > 0 and f0.min() >= LOW and f0.max() <= HIGH
