"""WaveNet decoder: quantized latents [B, D, N] -> waveform [B, 1, T], all samples at once.

Gated (tanh x sigmoid) dilated residual layers with skip connections, every layer conditioned on
the upsampled latents (WaveNet's local conditioning, non-autoregressive as in Parallel WaveGAN).
The stack runs at a frame rate of a few hundred per second; an inverse-STFT head (as in Vocos)
turns each frame into magnitude and phase, so synthesising the waveform costs one FFT per frame.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from codec.config import DecoderConfig


class GatedResidualLayer(nn.Module):
    def __init__(self, channels: int, skip_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.dilated = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation, padding=padding)
        self.condition = nn.Conv1d(channels, 2 * channels, 1)
        self.out = nn.Conv1d(channels, channels + skip_channels, 1)
        self.channels, self.skip_channels = channels, skip_channels

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x, cond [B, C, M] -> (residual output [B, C, M], skip [B, S, M])."""
        a, b = (self.dilated(x) + self.condition(cond)).chunk(2, dim=1)
        z = torch.tanh(a) * torch.sigmoid(b)
        residual, skip = self.out(z).split([self.channels, self.skip_channels], dim=1)
        return (x + residual) * math.sqrt(0.5), skip


class ISTFTHead(nn.Module):
    """Frames [B, C, M] -> waveform [B, 1, M * hop] through predicted log-magnitude and phase."""

    def __init__(self, channels: int, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.proj = nn.Conv1d(channels, n_fft + 2, 1)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def spectrum(self, x: torch.Tensor, log_magnitude_offset: torch.Tensor | None = None) -> torch.Tensor:
        """Frames [B, C, M] -> complex spectrum [B, n_fft // 2 + 1, M]; on the scale of
        `analysis_stft` of the waveform it synthesises (Hann analysis window, same hop).
        `log_magnitude_offset` [B, F, M] is added to the predicted log-magnitudes."""
        log_magnitude, phase = self.proj(x).float().chunk(2, dim=1)
        if log_magnitude_offset is not None:
            log_magnitude = log_magnitude + log_magnitude_offset.float()
        # The floor keeps magnitudes non-zero: the angle of a zero bin has no gradient (NaN).
        return torch.polar(torch.exp(log_magnitude.clamp(-20.0, 8.0)), phase)

    def synthesize(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex spectrum [B, F, M] -> waveform [B, 1, M * hop] by windowed overlap-add."""
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.window[None, :, None]  # [B, n_fft, M]
        num_frames = frames.shape[-1]
        length = (num_frames - 1) * self.hop + self.n_fft
        fold = nn.functional.fold
        signal = fold(frames, (1, length), kernel_size=(1, self.n_fft), stride=(1, self.hop))
        envelope = fold(
            self.window.square()[None, :, None].expand(1, -1, num_frames),
            (1, length),
            kernel_size=(1, self.n_fft),
            stride=(1, self.hop),
        )
        # "same" padding: frame m is centred on samples m*hop .. (m+1)*hop, so the output has
        # exactly M * hop samples and every sample is covered by at least two windows.
        pad = (self.n_fft - self.hop) // 2
        signal = signal[..., pad : pad + num_frames * self.hop]
        envelope = envelope[..., pad : pad + num_frames * self.hop]
        return (signal / envelope.clamp_min(1e-8)).reshape(spec.shape[0], 1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.synthesize(self.spectrum(x))


def analysis_stft(wav: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """The STFT that `ISTFTHead.synthesize` inverts: wav [B, 1, M * hop] -> [B, n_fft // 2 + 1, M],
    frame m centred on samples m*hop .. (m+1)*hop, Hann window, zeros beyond the ends."""
    pad = (n_fft - hop) // 2
    padded = nn.functional.pad(wav[:, 0], (pad, n_fft - hop - pad))
    window = torch.hann_window(n_fft, device=wav.device, dtype=padded.dtype)
    return torch.stft(padded, n_fft, hop, window=window, center=False, return_complex=True)


class Decoder(nn.Module):
    def __init__(self, config: DecoderConfig, latent_dim: int, hop_length: int):
        super().__init__()
        self.config = config
        c = config.channels
        u = config.upsample
        self.input = nn.Conv1d(latent_dim, c, config.kernel_size, padding=config.kernel_size // 2)
        if u > 1:
            self.upsample = nn.ConvTranspose1d(c, c, 2 * u, stride=u, padding=u // 2)
        else:
            self.upsample = nn.Conv1d(c, c, 1)
        self.layers = nn.ModuleList(
            GatedResidualLayer(c, config.skip_channels, config.kernel_size, d) for d in config.dilations
        )
        self.post = nn.Sequential(
            nn.GELU(), nn.Conv1d(config.skip_channels, config.skip_channels, 1), nn.GELU()
        )
        self.head = ISTFTHead(config.skip_channels, config.n_fft, hop_length // u)
        # Each latent frame -> `upsample` frames of log-magnitudes, linearly.
        self.linear = nn.ConvTranspose1d(latent_dim, config.n_fft // 2 + 1, u, stride=u) if config.linear_skip else None

    def spectrum(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, D, N] -> the head's complex spectrum [B, n_fft // 2 + 1, N * upsample]."""
        cond = self.upsample(self.input(latents))
        x = cond
        skips = 0
        for layer in self.layers:
            x, skip = layer(x, cond)
            skips = skips + skip
        offset = self.linear(latents) if self.linear is not None else None
        return self.head.spectrum(self.post(skips * math.sqrt(1.0 / len(self.layers))), offset)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, D, N] -> waveform [B, 1, N * hop_length]."""
        return self.head.synthesize(self.spectrum(latents))

    def receptive_field(self, hop_length: int) -> int:
        """Samples either side of a code frame that it can influence (an upper bound)."""
        c = self.config
        hop = hop_length // c.upsample
        frames = c.kernel_size // 2 * c.upsample + 2
        frames += sum(d * (c.kernel_size - 1) // 2 for d in c.dilations)
        return frames * hop + c.n_fft
