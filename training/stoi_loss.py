"""A differentiable STOI (Taal et al. 2011) as a training loss: 1 - STOI.

STOI correlates short-time (384 ms) envelopes of 15 one-third-octave bands (150 Hz to 4.3 kHz)
of the reference and the estimate, after scaling the estimate to the reference's energy per
band and segment and clipping it at -15 dB "SDR"; silent frames (40 dB below the loudest) of
the reference are dropped first. This follows `pystoi` (the metric the evaluation reports)
step by step with the same constants, so the loss matches the metric up to the resampler
(torchaudio's sinc filter instead of Octave's); gradients flow to the estimate through every
step (the silent-frame choice depends on the reference alone). Speech codecs and enhancement
models have trained on such a loss (Kolbæk et al. 2018); here it weighs the band envelopes that
intelligibility rests on, which a log-mel L1 treats like any other detail.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torchaudio
from torch import Tensor, nn

RATE = 10_000  # STOI works at 10 kHz
FRAME, HOP, NFFT = 256, 128, 512
BANDS, MIN_FREQ = 15, 150.0
SEGMENT = 30  # frames per intermediate intelligibility segment (384 ms)
BETA_DB = -15.0  # lower SDR bound of the clipping
DYN_RANGE_DB = 40.0  # frames this far below the loudest are silent
EPS = float(np.finfo(float).eps)


@functools.lru_cache(maxsize=1)
def third_octave_matrix() -> Tensor:
    """[15, NFFT // 2 + 1] 0/1 matrix summing FFT bins into one-third-octave bands (pystoi's)."""
    f = np.linspace(0, RATE, NFFT + 1)[: NFFT // 2 + 1]
    k = np.arange(BANDS, dtype=float)
    low = MIN_FREQ * 2.0 ** ((2 * k - 1) / 6)
    high = MIN_FREQ * 2.0 ** ((2 * k + 1) / 6)
    obm = np.zeros((BANDS, len(f)))
    for i in range(BANDS):
        obm[i, np.argmin((f - low[i]) ** 2) : np.argmin((f - high[i]) ** 2)] = 1
    return torch.from_numpy(obm).float()


def _window(device: torch.device) -> Tensor:
    return torch.hann_window(FRAME + 2, periodic=False, device=device)[1:-1]  # = np.hanning(258)[1:-1]


def _drop_silent_frames(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """x, y [T] -> both rebuilt by overlap-add from the frames where x is within 40 dB of its loudest."""
    window = _window(x.device)
    starts = range(0, len(x) - FRAME + 1, HOP)
    x_frames = torch.stack([window * x[s : s + FRAME] for s in starts])  # [F, FRAME]
    y_frames = torch.stack([window * y[s : s + FRAME] for s in starts])
    energy = 20 * torch.log10(x_frames.detach().norm(dim=1) + EPS)
    keep = energy > energy.max() - DYN_RANGE_DB
    x_frames, y_frames = x_frames[keep], y_frames[keep]
    length = (len(x_frames) - 1) * HOP + FRAME

    def overlap_add(frames: Tensor) -> Tensor:
        return nn.functional.fold(frames.T[None], (1, length), kernel_size=(1, FRAME), stride=(1, HOP)).reshape(-1)

    return overlap_add(x_frames), overlap_add(y_frames)


def _band_envelopes(x: Tensor, obm: Tensor) -> Tensor:
    """x [T] -> one-third-octave band magnitudes [15, F] of pystoi's STFT (its last frame left out)."""
    count = (len(x) - FRAME - 1) // HOP + 1  # pystoi: range(0, len(x) - FRAME, HOP)
    frames = x[: (count - 1) * HOP + FRAME].unfold(0, FRAME, HOP) * _window(x.device)  # [F, FRAME]
    power = torch.fft.rfft(frames, n=NFFT).abs().square()  # [F, NFFT // 2 + 1]
    return (obm @ power.T + EPS).sqrt()


def stoi(x: Tensor, y: Tensor, sample_rate: int) -> Tensor:
    """STOI of estimate y against reference x, each [T] at `sample_rate` -> scalar; NaN when
    fewer than 384 ms of x are loud enough to score (pystoi warns and returns 1e-5 there)."""
    if sample_rate != RATE:
        x = torchaudio.functional.resample(x, sample_rate, RATE)
        y = torchaudio.functional.resample(y, sample_rate, RATE)
    x, y = _drop_silent_frames(x, y)
    if len(x) < FRAME + SEGMENT * HOP:
        return torch.full((), float("nan"), device=x.device)
    obm = third_octave_matrix().to(x.device)
    x_env, y_env = _band_envelopes(x, obm), _band_envelopes(y, obm)  # [15, F]
    x_seg = x_env.unfold(1, SEGMENT, 1)  # [15, J, 30]
    y_seg = y_env.unfold(1, SEGMENT, 1)
    scale = x_seg.norm(dim=2, keepdim=True) / (y_seg.norm(dim=2, keepdim=True) + EPS)
    y_prime = torch.minimum(y_seg * scale, x_seg * (1 + 10 ** (-BETA_DB / 20)))
    y_prime = y_prime - y_prime.mean(dim=2, keepdim=True)
    x_seg = x_seg - x_seg.mean(dim=2, keepdim=True)
    y_prime = y_prime / (y_prime.norm(dim=2, keepdim=True) + EPS)
    x_seg = x_seg / (x_seg.norm(dim=2, keepdim=True) + EPS)
    return (x_seg * y_prime).sum(dim=2).mean()


class StoiLoss(nn.Module):
    """x_hat, x [B, 1, T] -> 1 - mean STOI over the items long and loud enough to score."""

    def __init__(self, sample_rate: int):
        super().__init__()
        self.sample_rate = sample_rate

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        scores = [stoi(r.float(), e.float(), self.sample_rate) for r, e in zip(x[:, 0], x_hat[:, 0])]
        scores = [s for s in scores if not torch.isnan(s)]
        if not scores:
            return x_hat.sum() * 0.0
        return 1 - torch.stack(scores).mean()
