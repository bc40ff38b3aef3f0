"""Pitch: an autocorrelation f0 tracker, and the phase of a harmonic sound with a given f0.

The tracker labels training audio for the decoder's pitch head; `harmonic_phase` is what that
head's decoder gives voiced frames (see codec.decoder). Frames are those of
`codec.decoder.analysis_stft`: frame m starts (n_fft - hop) // 2 samples before m * hop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PitchTrack:
    f0: torch.Tensor  # [B, M] in cycles per sample (Hz / sample rate); meaningful where voiced
    voiced: torch.Tensor  # [B, M] bool


def estimate_f0(wav: torch.Tensor, n_fft: int, hop: int, low: float, high: float, threshold: float = 0.5) -> PitchTrack:
    """wav [B, M * hop] -> one f0 per frame, searched between `low` and `high` cycles per sample.

    Normalised autocorrelation of each Hann-windowed frame, divided by the window's own
    autocorrelation (Boersma 1993). Of the peaks within 90% of the highest, the shortest lag
    wins, which avoids most sub-octave errors; parabolic interpolation refines the lag. A frame
    is voiced when its peak exceeds `threshold`, lies inside the range, and its energy is within
    40 dB of the loudest."""
    pad = (n_fft - hop) // 2
    frames = F.pad(wav, (pad, n_fft - hop - pad)).unfold(-1, n_fft, hop)  # [B, M, n_fft]
    frames = frames - frames.mean(-1, keepdim=True)
    window = torch.hann_window(n_fft, dtype=wav.dtype, device=wav.device)
    power = torch.fft.rfft(frames * window, 2 * n_fft).abs().square()
    autocorrelation = torch.fft.irfft(power, 2 * n_fft)[..., :n_fft]
    window_ac = torch.fft.irfft(torch.fft.rfft(window, 2 * n_fft).abs().square(), 2 * n_fft)[:n_fft]
    energy = autocorrelation[..., 0]
    normalised = autocorrelation / energy[..., None].clamp_min(1e-12) / (window_ac / window_ac[0]).clamp_min(1e-3)
    first, last = max(2, int(1 / high)), min(n_fft - 2, int(math.ceil(1 / low)))
    lags = normalised[..., first - 1 : last + 2]  # one lag either side for the peak test
    middle = lags[..., 1:-1]
    best = middle.max(-1, keepdim=True).values
    is_peak = (middle >= lags[..., :-2]) & (middle >= lags[..., 2:]) & (middle >= 0.9 * best)
    index = torch.where(is_peak.any(-1), is_peak.float().argmax(-1), middle.argmax(-1)) + 1
    a, b, c = (lags.gather(-1, (index + d)[..., None])[..., 0] for d in (-1, 0, 1))
    shift = (0.5 * (a - c) / (a - 2 * b + c).clamp(max=-1e-9)).clamp(-0.5, 0.5)
    lag = first - 1 + index + shift
    loud = energy > 1e-4 * energy.amax(-1, keepdim=True).clamp_min(1e-12)
    # A best lag at either end of the range is no peak of it: the pitch lies outside.
    inside = (index > 1) & (index < middle.shape[-1])
    return PitchTrack(1.0 / lag, (b > threshold) & loud & inside)


def harmonic_phase(f0: torch.Tensor, theta: torch.Tensor, n_fft: int) -> torch.Tensor:
    """The phase [B, F, M] of a pulse train: f0 [B, M] (cycles per sample) and its running phase
    theta [B, M] (radians) -> each bin takes the phase of its nearest harmonic, h * theta, with
    neighbouring bins a half-turn apart (frames are referenced to their first sample)."""
    bins = torch.arange(n_fft // 2 + 1, device=f0.device, dtype=torch.float64)[:, None]
    harmonic = torch.round(bins / (n_fft * f0.double()[:, None, :])).clamp_min(1)
    # theta is wrapped to [0, 2 pi) and h is an integer, so h * theta keeps its precision.
    return torch.remainder(math.pi * bins + harmonic * theta.double()[:, None, :], 2 * math.pi)
