"""WaveNet decoder: quantized latents [B, D, N] -> waveform [B, 1, T], all samples at once.

Gated (tanh x sigmoid) dilated residual layers with skip connections, every layer conditioned on
the upsampled latents (WaveNet's local conditioning, non-autoregressive as in Parallel WaveGAN).
The stack runs at a frame rate of a few hundred per second; an inverse-STFT head (as in Vocos)
turns each frame into magnitude and phase, so synthesising the waveform costs one FFT per frame.

Phase. A head that predicted each frame's phase outright (as Vocos does) would be a function of
local context only, so a steady input would give identical frames and an output periodic in the
frame hop (partials at multiples of the 50 Hz code rate). This head sums phase over time
instead: a pitch head predicts f0 and voicing; voiced frames take the phase of a pulse train at
that f0 (`codec.pitch.harmonic_phase`: each bin the phase of its nearest harmonic, h times the
fundamental's running phase), unvoiced frames a phase predicted per frame. Windowed decoding
carries the running phase from one window to the next (`codec.windowing`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from codec.config import DecoderConfig
from codec.pitch import harmonic_phase


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


@dataclass
class HeadOutput:
    # Complex spectrum [B, F, M], F = n_fft // 2 + 1, on the scale of `analysis_stft` of the
    # waveform it synthesises (Hann analysis window, same hop).
    spectrum: torch.Tensor
    # The fundamental's running phase [B, M], float64 wrapped to [0, 2 pi); it starts at frame 0
    # of the input unless an origin was given.
    phase_track: torch.Tensor
    # log f0 in cycles per sample [B, M] and voicing logits [B, M] (> 0: voiced).
    log_f0: torch.Tensor
    voicing: torch.Tensor


class PitchHead(nn.Module):
    """Frames [B, C, M] -> log f0 [B, M] (cycles per sample, between `low` and `high`) and
    voicing logits [B, M]."""

    def __init__(self, channels: int, kernel_size: int, low: float, high: float):
        super().__init__()
        padding = kernel_size // 2
        self.net = nn.Sequential(
            nn.Conv1d(channels, channels, kernel_size, padding=padding),
            nn.GELU(),
            nn.Conv1d(channels, channels, kernel_size, padding=padding),
            nn.GELU(),
            nn.Conv1d(channels, 2, 1),
        )
        # Starts unvoiced: every frame takes the phase predicted for it until f0 is learnt.
        nn.init.constant_(self.net[-1].bias, -3.0)
        self.log_low, self.log_high = math.log(low), math.log(high)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, voicing = self.net(x).float().unbind(dim=1)
        return self.log_low + torch.sigmoid(raw) * (self.log_high - self.log_low), voicing


class ISTFTHead(nn.Module):
    """Frames [B, C, M] -> waveform [B, 1, M * hop] through predicted log-magnitude and phase."""

    def __init__(
        self, channels: int, n_fft: int, hop: int, pitch_range: tuple[float, float] = (60 / 16000, 400 / 16000)
    ):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.proj = nn.Conv1d(channels, n_fft + 2, 1)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.pitch = PitchHead(channels, 3, *pitch_range)

    def spectrum(
        self,
        x: torch.Tensor,
        log_magnitude_offset: torch.Tensor | None = None,
        origin: tuple[torch.Tensor, int] | None = None,
        pitch: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> HeadOutput:
        """Frames [B, C, M] -> the spectrum for M frames. `log_magnitude_offset` [B, F, M] is
        added to the predicted log-magnitudes. `origin` (value [B], frame) sets the running phase
        at that frame (to continue an earlier window's). `pitch` (log f0 [B, M] in cycles per
        sample, mask [B, M] bool): the given f0 replaces the predicted one on the masked frames
        (the pitch side stream's f0, `codec.pitchcode`)."""
        log_magnitude, phase = self.proj(x).float().chunk(2, dim=1)
        if log_magnitude_offset is not None:
            log_magnitude = log_magnitude + log_magnitude_offset.float()
        log_f0, voicing = self.pitch(x)
        if pitch is not None:
            given, mask = pitch
            log_f0 = torch.where(mask, given.to(log_f0.dtype), log_f0)
        # The pitch head learns from the tracker's labels alone: the phase is a hard function of
        # f0, and the gradient of h * theta through a running sum is unstable. float64: the sum
        # grows by up to 2 pi per frame, which float32 would soon round away.
        f0 = log_f0.detach().double().exp()
        phase_track = _wrap((2 * math.pi * self.hop * f0).cumsum(dim=-1), origin)
        harmonic = harmonic_phase(f0, phase_track, self.n_fft).float()
        phase = torch.where(voicing.detach()[:, None, :] > 0, harmonic, phase)
        # The floor keeps magnitudes non-zero: the angle of a zero bin has no gradient (NaN).
        spectrum = torch.polar(torch.exp(log_magnitude.clamp(-20.0, 8.0)), phase)
        return HeadOutput(spectrum, phase_track, log_f0, voicing)

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
        return self.synthesize(self.spectrum(x).spectrum)


def _wrap(track: torch.Tensor, origin: tuple[torch.Tensor, int] | None) -> torch.Tensor:
    """A running phase [..., M], shifted to `origin` = (value, frame) if given, wrapped."""
    if origin is not None:
        value, frame = origin
        track = track + (value - track[..., frame])[..., None]
    return torch.remainder(track, 2 * math.pi)


def analysis_stft(wav: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """The STFT that `ISTFTHead.synthesize` inverts: wav [B, 1, M * hop] -> [B, n_fft // 2 + 1, M],
    frame m centred on samples m*hop .. (m+1)*hop, Hann window, zeros beyond the ends."""
    pad = (n_fft - hop) // 2
    padded = nn.functional.pad(wav[:, 0], (pad, n_fft - hop - pad))
    window = torch.hann_window(n_fft, device=wav.device, dtype=padded.dtype)
    return torch.stft(padded, n_fft, hop, window=window, center=False, return_complex=True)


class Decoder(nn.Module):
    def __init__(self, config: DecoderConfig, latent_dim: int, hop_length: int, sample_rate: int = 16000):
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
        self.post = nn.Sequential(nn.GELU(), nn.Conv1d(config.skip_channels, config.skip_channels, 1), nn.GELU())
        pitch_range = (config.pitch_min_hz / sample_rate, config.pitch_max_hz / sample_rate)
        self.head = ISTFTHead(config.skip_channels, config.n_fft, hop_length // u, pitch_range)
        # Each latent frame -> `upsample` frames of log-magnitudes, linearly, beside the stack:
        # the linear part of the mapping (the spectral envelope) is learnt in a few hundred steps
        # (log-spectral L1 0.70 against 0.96 without it after 400 steps from scratch), and the
        # stack learns what is left.
        self.linear = nn.ConvTranspose1d(latent_dim, config.n_fft // 2 + 1, u, stride=u)

    def spectrum(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, D, N] -> the head's complex spectrum [B, n_fft // 2 + 1, N * upsample]."""
        return self.head_output(latents).spectrum

    def head_output(
        self,
        latents: torch.Tensor,
        origin: tuple[torch.Tensor, int] | None = None,
        pitch: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> HeadOutput:
        """latents [B, D, N] -> the head's output for N * upsample frames (`origin`, `pitch`: see
        `ISTFTHead.spectrum`)."""
        cond = self.upsample(self.input(latents))
        x = cond
        skips = 0
        for layer in self.layers:
            x, skip = layer(x, cond)
            skips = skips + skip
        offset = self.linear(latents)
        return self.head.spectrum(self.post(skips * math.sqrt(1.0 / len(self.layers))), offset, origin, pitch)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, D, N] -> waveform [B, 1, N * hop_length]."""
        return self.head.synthesize(self.spectrum(latents))

    def receptive_field(self, hop_length: int) -> int:
        """Samples either side of a code frame that it can influence (an upper bound)."""
        c = self.config
        hop = hop_length // c.upsample
        frames = c.kernel_size // 2 * c.upsample + 2
        frames += sum(d * (c.kernel_size - 1) // 2 for d in c.dilations)
        frames += 2  # the pitch head's two convolutions
        return frames * hop + c.n_fft
