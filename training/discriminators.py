"""Discriminators for adversarial codec training: multi-period (HiFi-GAN) and multi-resolution
complex-STFT (EnCodec MS-STFT-D), combined by `Discriminator`.

Every sub-discriminator returns a `DiscriminatorOutput`; `Discriminator` returns one per
sub-discriminator, period discriminators first. The defaults are far narrower than the papers'
(HiFi-GAN's MPD reaches 1024 channels) so that training fits a small CPU budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


@dataclass
class DiscriminatorOutput:
    """What one sub-discriminator says about a batch.

    logits: [B, 1, H, W] realness scores (H, W depend on the sub-discriminator and on T).
    features: activations after each hidden layer, used for feature matching; excludes logits.
    """

    logits: Tensor
    features: list[Tensor]


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Shape of the combined discriminator; store it next to the discriminator's weights."""

    # Periods of the HiFi-GAN period discriminators (primes, so their views overlap little).
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    # Channels of the first period-discriminator layer; each later layer has 4x more, up to max.
    mpd_channels: int = 16
    mpd_max_channels: int = 128
    # FFT sizes of the complex-STFT discriminators (hop n_fft // 4); 64, 32, 16 ms at 16 kHz.
    stft_n_ffts: tuple[int, ...] = (1024, 512, 256)
    # Channels of every STFT-discriminator layer (EnCodec uses 32 throughout). At 16 the three
    # resolutions take 0.6 s forward and backward for 16 x 1 s on 2 CPU cores, 2.05 s at 32.
    stft_channels: int = 16


def _wn_conv2d(in_ch: int, out_ch: int, kernel: tuple[int, int], stride=(1, 1), dilation=(1, 1)) -> nn.Conv2d:
    padding = ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)
    return weight_norm(nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation))


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN period discriminator: folds [B, 1, T] into [B, 1, T / p, p] and convolves along
    time only (kernel (5, 1), stride 3), so each of the p phases is judged separately."""

    def __init__(self, period: int, channels: int = 16, max_channels: int = 128):
        super().__init__()
        self.period = period
        widths = [min(channels * 4**i, max_channels) for i in range(4)]
        widths.append(widths[-1])
        layers, in_ch = [], 1
        for i, out_ch in enumerate(widths):
            stride = (1, 1) if i == len(widths) - 1 else (3, 1)
            layers.append(_wn_conv2d(in_ch, out_ch, (5, 1), stride))
            in_ch = out_ch
        self.convs = nn.ModuleList(layers)
        self.post = _wn_conv2d(in_ch, 1, (3, 1))

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """x: [B, 1, T] -> logits [B, 1, ceil(T / p) / 3^4, p]."""
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        x = x.view(b, c, -1, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        return DiscriminatorOutput(self.post(x), features)


class MultiPeriodDiscriminator(nn.Module):
    """One `PeriodDiscriminator` per period."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), channels: int = 16, max_channels: int = 128):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels, max_channels) for p in periods)

    def forward(self, x: Tensor) -> list[DiscriminatorOutput]:
        """x: [B, 1, T] -> one output per period."""
        return [d(x) for d in self.discriminators]


class STFTDiscriminator(nn.Module):
    """EnCodec STFT sub-discriminator on the complex spectrogram.

    Real and imaginary parts are two input channels of a 2-D conv stack laid out [B, 2, N, F]
    (frames, bins). Strides of 2 halve the frequency axis; dilations 1, 2, 4 widen the view in
    time. Seeing phase lets it punish artefacts that magnitude losses cannot see.
    """

    def __init__(self, n_fft: int, channels: int = 32):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [_wn_conv2d(2, channels, (3, 9))]
        for dilation in (1, 2, 4):
            layers.append(_wn_conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(dilation, 1)))
        layers.append(_wn_conv2d(channels, channels, (3, 3)))
        self.convs = nn.ModuleList(layers)
        self.post = _wn_conv2d(channels, 1, (3, 3))

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """x: [B, 1, T] -> logits [B, 1, N, ~F / 8].

        N = 1 + (T - n_fft) // hop (no centring), F = n_fft // 2 + 1 bins.
        """
        spec = torch.stft(
            x.reshape(-1, x.shape[-1]),
            self.n_fft,
            self.hop_length,
            window=self.window,
            center=False,
            # Scaled by 1/sqrt(n_fft), as EnCodec does, so every resolution sees similar magnitudes.
            normalized=True,
            return_complex=True,
        )  # [B, F, N]
        z = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, N, F]
        features = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), 0.2)
            features.append(z)
        return DiscriminatorOutput(self.post(z), features)


class MultiResolutionSTFTDiscriminator(nn.Module):
    """One `STFTDiscriminator` per FFT size."""

    def __init__(self, n_ffts: Sequence[int] = (1024, 512, 256), channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, channels) for n in n_ffts)

    def forward(self, x: Tensor) -> list[DiscriminatorOutput]:
        """x: [B, 1, T] with T >= max(n_ffts) -> one output per resolution."""
        return [d(x) for d in self.discriminators]


class Discriminator(nn.Module):
    """All sub-discriminators of `config`: period discriminators, then STFT discriminators."""

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        self.config = config
        self.mpd = MultiPeriodDiscriminator(config.periods, config.mpd_channels, config.mpd_max_channels)
        self.mrsd = MultiResolutionSTFTDiscriminator(config.stft_n_ffts, config.stft_channels)

    def forward(self, x: Tensor) -> list[DiscriminatorOutput]:
        """x: [B, 1, T] -> len(periods) + len(stft_n_ffts) outputs."""
        return self.mpd(x) + self.mrsd(x)
