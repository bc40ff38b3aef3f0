"""Convolutional encoder: waveform [B, 1, T] -> latents [B, D, N] at the code frame rate.

The first stage is a short-time Fourier transform (log-magnitudes), so all learned layers run at
the STFT frame rate (100/s by default) rather than the 16 kHz sample rate; on a 2-core CPU that
is the difference between 10x and 100x real time.
"""

from __future__ import annotations

import torch
from torch import nn

from codec.config import EncoderConfig


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
        self.input = nn.Conv1d(bins, channels, config.kernel_size, padding=config.kernel_size // 2)
        self.blocks = nn.Sequential(*(ResidualUnit(channels, config.kernel_size, d) for d in config.dilations))
        stride = self.stride
        if stride > 1:
            self.down = nn.Conv1d(channels, channels, 2 * stride, stride=stride, padding=stride // 2)
        else:
            self.down = nn.Conv1d(channels, channels, 1)
        self.output = nn.Sequential(
            nn.GELU(), nn.Conv1d(channels, config.latent_dim, config.kernel_size, padding=config.kernel_size // 2)
        )

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, 1, T] (T a multiple of hop_length) -> STFT log-magnitudes [B, F, M],
        F = n_fft // 2 + 1, M = T / stft_hop, scaled to about [-2, 2]."""
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
        return (spec.abs().clamp_min(1e-5).log() + 4.0) / 4.0

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
