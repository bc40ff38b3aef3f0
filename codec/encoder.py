"""Convolutional encoder: waveform [B, 1, T] -> latents [B, D, N] at the code frame rate.

The first stage is a short-time Fourier transform (log-magnitudes, or power-law compressed complex
values), so all learned layers run at the STFT frame rate (100/s by default) rather than the
16 kHz sample rate; on a 2-core CPU that is the difference between 10x and 100x real time.
"""

from __future__ import annotations

import torch
from torch import nn

from codec.config import EncoderConfig
from codec.pitch import estimate_f0
from codec.pitchcode import HIGH_HZ, LOW_HZ

# "logmag+f0": the pitch tracker's search range (cycles per sample at 16 kHz), as the pitch side
# stream's, and the scaling of its log f0 into about [-2, 2].
F0_RANGE = (LOW_HZ / 16000, HIGH_HZ / 16000)
LOG_F0_CENTRE, LOG_F0_SCALE = float(torch.log(torch.tensor(150 / 16000))), 0.5


class ResidualUnit(nn.Module):
    """x + Conv1x1(GELU(DilatedConv(GELU(x)))), length preserving."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=padding)
        self.proj = nn.Conv1d(channels, channels, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(self.act(self.conv(self.act(x))))


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig, hop_length: int):
        super().__init__()
        self.config = config
        self.hop_length = hop_length
        self.stride = hop_length // config.stft_hop
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        bins = config.n_fft // 2 + 1
        channels = config.channels
        inputs = {"logmag": bins, "compressed": 2 * bins, "logmag+phase": 3 * bins, "logmag+f0": bins + 2}[config.features]
        self.input = nn.Conv1d(inputs, channels, config.kernel_size, padding=config.kernel_size // 2)
        self.blocks = nn.Sequential(
            *(ResidualUnit(channels, config.kernel_size, d) for d in config.dilations)
        )
        stride = self.stride
        if stride > 1:
            self.down = nn.Conv1d(channels, channels, 2 * stride, stride=stride, padding=stride // 2)
        else:
            self.down = nn.Conv1d(channels, channels, 1)
        self.output = nn.Sequential(
            nn.GELU(), nn.Conv1d(channels, config.latent_dim, config.kernel_size, padding=config.kernel_size // 2)
        )

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """STFT features of wav [B, 1, T] (T a multiple of hop_length) -> [B, F, M] log-magnitudes,
        [B, 2F, M] compressed complex values, [B, 3F, M] both (log-magnitudes first), or [B, F + 2, M]
        log-magnitudes, voicing and log f0 (`codec.pitch.estimate_f0`; log f0 0 where unvoiced)."""
        spec = torch.stft(
            wav[:, 0].float(),
            self.config.n_fft,
            self.config.stft_hop,
            window=self.window,
            center=True,
            pad_mode="constant",  # reflection needs more samples than a very short clip has
            return_complex=True,
        )[..., : wav.shape[-1] // self.config.stft_hop]
        # log|X| spans about -11.5 (the floor) to +5 for full-scale audio.
        log_magnitude = (spec.abs().clamp_min(1e-5).log() + 4.0) / 4.0
        if self.config.features == "logmag":
            return log_magnitude
        if self.config.features == "logmag+f0":
            # The log-magnitudes place harmonics to about a 25 Hz bin; the tracker's parabolic
            # peak gives f0 to a fraction of a percent, the precision a pulse train needs to stay
            # in phase with the input over a voiced stretch.
            track = estimate_f0(wav[:, 0].float(), self.config.n_fft, self.config.stft_hop, *F0_RANGE)
            voiced = track.voiced.to(log_magnitude.dtype)
            log_f0 = (track.f0.clamp_min(1e-6).log() - LOG_F0_CENTRE) / LOG_F0_SCALE * voiced
            return torch.cat([log_magnitude, voiced[:, None], log_f0[:, None].to(log_magnitude.dtype)], dim=1)
        magnitude = spec.abs().clamp_min(1e-7)
        spec = spec * magnitude.pow(0.3 - 1.0)
        if self.config.features == "compressed":
            return torch.cat([spec.real, spec.imag], dim=1)
        return torch.cat([log_magnitude, spec.real, spec.imag], dim=1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, 1, T] with T a multiple of hop_length -> latents [B, D, T / hop_length]."""
        x = self.features(wav).to(self.input.weight.dtype)
        x = self.blocks(self.input(x))
        return self.output(self.down(x))

    @property
    def receptive_field(self) -> int:
        """Samples either side of a frame that can influence it (an upper bound)."""
        c = self.config
        frames = c.kernel_size // 2 * 2 + sum(d * (c.kernel_size - 1) // 2 for d in c.dilations)
        frames += 2 * self.stride + c.kernel_size // 2 * self.stride
        return frames * c.stft_hop + c.n_fft // 2
