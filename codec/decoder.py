"""WaveNet decoder: quantized latents [B, D, N] -> waveform [B, 1, T], all samples at once.

Gated (tanh x sigmoid) dilated residual layers with skip connections, every layer conditioned on
the upsampled latents (WaveNet's local conditioning, non-autoregressive as in Parallel WaveGAN).
The stack runs at a frame rate of a few hundred per second; an inverse-STFT head (as in Vocos)
turns each frame into magnitude and phase, so synthesising the waveform costs one FFT per frame.

Phase. A head that predicts each frame's phase outright ("direct", as Vocos does) is a function
of local context only, so a steady input gives identical frames and an output periodic in the
frame hop: fed a steady 175 Hz harmonic tone, the shipped model answers with partials at 150, 200,
350 and 400 Hz, multiples of the 50 Hz code rate. Two heads sum phase over time instead, so
windowed decoding carries the running phase from one window to the next (`codec.windowing`):
- "integrated": each group of adjacent bins predicts its phase advance per frame (the group's
  nominal advance plus a learnt deviation), summed over time, plus a per-frame phase for the
  pattern across bins, as a phase vocoder does. Groups rather than single bins: per-bin sums
  drift apart and destroy the phase differences across frequency (group delay).
- "harmonic": a pitch head predicts f0 and voicing; voiced frames take the phase of a pulse
  train at that f0 (`codec.pitch.harmonic_phase`: each bin the phase of its nearest harmonic,
  h times the fundamental's running phase), unvoiced frames the direct phase.
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
    # The phase summed over time, float64 wrapped to [0, 2 pi): per bin [B, F, M] for an
    # integrated head, the fundamental's running phase [B, M] for a harmonic one; None for a
    # direct head. It starts at frame 0 of the input unless an origin was given.
    phase_track: torch.Tensor | None = None
    # Harmonic head only: log f0 in cycles per sample [B, M] and voicing logits [B, M].
    log_f0: torch.Tensor | None = None
    voicing: torch.Tensor | None = None


class PitchHead(nn.Module):
    """Frames [B, C, M] -> log f0 [B, M] (cycles per sample, between `low` and `high`) and
    voicing logits [B, M]."""

    def __init__(self, channels: int, kernel_size: int, low: float, high: float):
        super().__init__()
        padding = kernel_size // 2
        self.net = nn.Sequential(
            nn.Conv1d(channels, channels, kernel_size, padding=padding), nn.GELU(),
            nn.Conv1d(channels, channels, kernel_size, padding=padding), nn.GELU(),
            nn.Conv1d(channels, 2, 1),
        )
        # Starts unvoiced, so a decoder moved over from a direct head keeps its phase at first.
        nn.init.constant_(self.net[-1].bias, -3.0)
        self.log_low, self.log_high = math.log(low), math.log(high)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, voicing = self.net(x).float().unbind(dim=1)
        return self.log_low + torch.sigmoid(raw) * (self.log_high - self.log_low), voicing


class ISTFTHead(nn.Module):
    """Frames [B, C, M] -> waveform [B, 1, M * hop] through predicted log-magnitude and phase."""

    def __init__(
        self,
        channels: int,
        n_fft: int,
        hop: int,
        phase: str = "direct",
        phase_group: int = 1,
        pitch_range: tuple[float, float] = (60 / 16000, 400 / 16000),
        phase_align: bool = False,
    ):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.proj = nn.Conv1d(channels, n_fft + 2, 1)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.advance = self.pitch = self.align = None
        if phase == "integrated":
            bins = n_fft // 2 + 1
            self.phase_group = phase_group
            groups = -(-bins // phase_group)
            # One advance per group of adjacent bins: the bins a partial spreads over turn
            # together, so their phase differences (group delay) stay put instead of drifting.
            # Starts at the nominal advances: a sinusoid at the group's centre frequency.
            self.advance = nn.Conv1d(channels, groups, 1)
            nn.init.zeros_(self.advance.weight)
            nn.init.zeros_(self.advance.bias)
            centres = torch.arange(groups, dtype=torch.float64) * phase_group + (phase_group - 1) / 2
            nominal = 2 * math.pi * centres * hop / n_fft
            self.register_buffer("nominal_advance", torch.remainder(nominal, 2 * math.pi), persistent=False)
        elif phase == "harmonic":
            self.pitch = PitchHead(channels, 3, *pitch_range)
            if phase_align:
                # (a, b) per frame, added to e^{i theta}; zero: the plain running phase.
                self.align = nn.Conv1d(channels, 2, 1)
                nn.init.zeros_(self.align.weight)
                nn.init.zeros_(self.align.bias)

    def spectrum(
        self,
        x: torch.Tensor,
        log_magnitude_offset: torch.Tensor | None = None,
        origin: tuple[torch.Tensor, int] | None = None,
        pitch: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> HeadOutput:
        """Frames [B, C, M] -> the spectrum for M frames. `log_magnitude_offset` [B, F, M] is
        added to the predicted log-magnitudes. `origin` (value, frame) sets the phase track at
        that frame (to continue an earlier window's), shape as one frame of `phase_track`.
        `pitch` (log f0 [B, M] in cycles per sample, mask [B, M] bool), harmonic head only: the
        given f0 replaces the predicted one on the masked frames (f0 known from elsewhere, e.g.
        the input's, to measure what a sent pitch would be worth)."""
        if pitch is not None and self.pitch is None:
            raise ValueError("a given pitch needs a harmonic head")
        log_magnitude, phase = self.proj(x).float().chunk(2, dim=1)
        if log_magnitude_offset is not None:
            log_magnitude = log_magnitude + log_magnitude_offset.float()
        phase_track = log_f0 = voicing = None
        if self.advance is not None:
            # float64: the sum grows by up to 2 pi per frame, which float32 would soon round away.
            advance = self.nominal_advance[:, None] + self.advance(x).double()
            track = advance.cumsum(dim=-1).repeat_interleave(self.phase_group, dim=1)[:, : phase.shape[1]]
            phase_track = _wrap(track, origin)
            phase = phase + phase_track.float()
        elif self.pitch is not None:
            log_f0, voicing = self.pitch(x)
            if pitch is not None:
                given, mask = pitch
                log_f0 = torch.where(mask, given.to(log_f0.dtype), log_f0)
            # The pitch head learns from the tracker's labels alone: the phase is a hard
            # function of f0, and the gradient of h * theta through a running sum is unstable.
            f0 = log_f0.detach().double().exp()
            phase_track = _wrap((2 * math.pi * self.hop * f0).cumsum(dim=-1), origin)
            fundamental = phase_track
            if self.align is not None:
                # The offset moves the pulses to where the codes say the input's are; its gradient
                # reaches the codes through angle(), with nothing summed over time.
                a, b = self.align(x).double().unbind(dim=1)
                fundamental = torch.remainder(torch.atan2(phase_track.sin() + b, phase_track.cos() + a), 2 * math.pi)
            harmonic = harmonic_phase(f0, fundamental, self.n_fft).float()
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
        self.post = nn.Sequential(
            nn.GELU(), nn.Conv1d(config.skip_channels, config.skip_channels, 1), nn.GELU()
        )
        pitch_range = (config.pitch_min_hz / sample_rate, config.pitch_max_hz / sample_rate)
        self.head = ISTFTHead(config.skip_channels, config.n_fft, hop_length // u, config.phase, config.phase_group, pitch_range,
                              config.phase_align)
        # Each latent frame -> `upsample` frames of log-magnitudes, linearly.
        self.linear = nn.ConvTranspose1d(latent_dim, config.n_fft // 2 + 1, u, stride=u) if config.linear_skip else None

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
        offset = self.linear(latents) if self.linear is not None else None
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
        if c.phase == "harmonic":
            frames += 2  # the pitch head's two convolutions
        return frames * hop + c.n_fft
