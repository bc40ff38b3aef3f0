"""Training losses: multi-resolution STFT, multi-scale mel, and least-squares GAN terms.

Reconstruction losses take `x_hat, x` of shape [B, 1, T] (estimate first, reference second)
and return a scalar tensor. Facts carried over from the reference implementations:
- Spectral convergence + log-magnitude L1 per resolution, averaged over resolutions
  (Parallel WaveGAN / audiocraft `MRSTFTLoss`).
- Multi-scale log10-mel L1 with hop = window // 4, mel clamp 1e-5, slaney mel filters, summed
  over scales (DAC `MelSpectrogramLoss` with its base.yml settings: pow 1, mag_weight 0).
  Summing keeps DAC's loss weight (15) meaningful.
- Losses on the decoder head's own spectrum, before synthesis: log-magnitude L1 against the STFT
  that the head inverts, and APNet's phase losses (Ai and Ling 2023): instantaneous phase, group
  delay (phase difference across frequency) and instantaneous angular frequency (difference across
  time), each through the anti-wrapping function |x - 2 pi round(x / 2 pi)|. Without them an
  iSTFT head trained on magnitude losses alone settled on large, random-phase spectra whose
  overlap-add cancels into smeared noise (PESQ 1.1 after 3000 steps). Unlike APNet, the phase
  errors are weighted by the reference magnitude, since the phase of a silent bin is noise. For a
  head that sums phase advances over time (codec.decoder), the instantaneous phase term is left
  out: the summed phase starts where the crop starts, so its absolute value is arbitrary.
- A harmonic head's pitch (codec.decoder) learns from an autocorrelation tracker's labels.
- Least-squares adversarial losses (HiFi-GAN, DAC), feature matching normalised by the mean
  magnitude of the real features (EnCodec). Unlike HiFi-GAN/DAC, which sum, the GAN terms are
  averaged over sub-discriminators (as audiocraft does), so weights do not depend on how many
  sub-discriminators there are.

Inputs must be longer than half the largest FFT size (reflect padding), e.g. T > 1024 for the
default 2048-point resolutions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from codec.decoder import analysis_stft
from codec.pitch import estimate_f0
from training.discriminators import DiscriminatorOutput

LOG_CLAMP = 1e-5


def stft_magnitude(x: Tensor, window: Tensor, hop_length: int) -> Tensor:
    """Magnitude STFT of `x` [B, 1, T] -> [B, F, N], F = n_fft // 2 + 1, centred frames."""
    n_fft = window.shape[-1]
    spec = torch.stft(
        x.reshape(-1, x.shape[-1]),
        n_fft,
        hop_length,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    # abs() of a complex zero has a zero (not NaN) gradient, so silence is safe here.
    return spec.abs()


def log_mel(x: Tensor, window: Tensor, hop_length: int, mel_fbank: Tensor) -> Tensor:
    """log10 mel magnitude of `x` [B, 1, T] -> [B, N, M] with M = mel_fbank.shape[1]."""
    mag = stft_magnitude(x, window, hop_length)  # [B, F, N]
    mel = mag.transpose(1, 2) @ mel_fbank  # [B, N, M]
    return mel.clamp_min(LOG_CLAMP).log10()


def _mel_fbank(n_fft: int, n_mels: int, sample_rate: int) -> Tensor:
    """Slaney-scale, slaney-normalised filters (librosa's default, as DAC uses): [F, M]."""
    return torchaudio.functional.melscale_fbanks(
        n_freqs=n_fft // 2 + 1,
        f_min=0.0,
        f_max=sample_rate / 2,
        n_mels=n_mels,
        sample_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over several FFT sizes.

    Each resolution uses a Hann window of length n_fft and hop n_fft // 4. At 16 kHz the
    defaults span 128 ms (2048) down to 8 ms (128) windows.
    """

    def __init__(
        self,
        n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128),
        sc_weight: float = 1.0,
        log_mag_weight: float = 1.0,
    ):
        super().__init__()
        self.n_ffts = tuple(n_ffts)
        self.sc_weight = sc_weight
        self.log_mag_weight = log_mag_weight
        for n_fft in self.n_ffts:
            # Not persistent: windows are a function of n_fft, so they stay out of checkpoints.
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """x_hat, x: [B, 1, T] -> scalar loss."""
        total = x_hat.new_zeros(())
        for n_fft in self.n_ffts:
            window = getattr(self, f"window_{n_fft}")
            mag_hat = stft_magnitude(x_hat, window, n_fft // 4)
            mag = stft_magnitude(x, window, n_fft // 4)
            # Frobenius norm over the whole batch, as Parallel WaveGAN does.
            sc = torch.linalg.vector_norm(mag - mag_hat) / (torch.linalg.vector_norm(mag) + 1e-7)
            log_mag = F.l1_loss(mag_hat.clamp_min(LOG_CLAMP).log(), mag.clamp_min(LOG_CLAMP).log())
            total = total + self.sc_weight * sc + self.log_mag_weight * log_mag
        return total / len(self.n_ffts)


class MelLoss(nn.Module):
    """Multi-scale log10-mel L1, summed over scales (DAC's mel reconstruction loss).

    Window w uses hop w // 4 and n_mels mel bands. The defaults double both window and mel count
    at each step, which at 16 kHz leaves no empty mel filter at any scale.
    """

    def __init__(
        self,
        sample_rate: int = 16_000,
        window_lengths: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
        n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320),
    ):
        super().__init__()
        if len(window_lengths) != len(n_mels):
            raise ValueError("window_lengths and n_mels must have the same length")
        self.sample_rate = sample_rate
        self.window_lengths = tuple(window_lengths)
        for w, m in zip(self.window_lengths, n_mels):
            self.register_buffer(f"window_{w}", torch.hann_window(w), persistent=False)
            self.register_buffer(f"fbank_{w}", _mel_fbank(w, m, sample_rate), persistent=False)

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """x_hat, x: [B, 1, T] -> scalar loss."""
        total = x_hat.new_zeros(())
        for w in self.window_lengths:
            window, fbank = getattr(self, f"window_{w}"), getattr(self, f"fbank_{w}")
            hop = w // 4
            mel_hat, mel = log_mel(x_hat, window, hop, fbank), log_mel(x, window, hop, fbank)
            total = total + F.l1_loss(mel_hat, mel)
        return total


def anti_wrap(x: Tensor) -> Tensor:
    """|x| after wrapping x into [-pi, pi]: the distance between two phases."""
    return (x - 2 * torch.pi * torch.round(x / (2 * torch.pi))).abs()


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1e-8)


class HeadSpectrumLoss(nn.Module):
    """Log-magnitude and phase losses between the head's spectrum and the reference's STFT. The
    phase terms compare phase differences across frequency and time, not absolute phase: the
    head's running phase starts wherever a window starts, so only its differences can match."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop

    def forward(self, spectrum: Tensor, x: Tensor) -> dict[str, Tensor]:
        """spectrum [B, F, M] complex, x [B, 1, T] with T <= M * hop -> {"head": log-magnitude
        L1, "phase": group delay + instantaneous frequency errors}."""
        frames = spectrum.shape[-1]
        x = F.pad(x, (0, frames * self.hop - x.shape[-1]))
        reference = analysis_stft(x.float(), self.n_fft, self.hop)
        magnitude = reference.abs()
        log_mag = F.l1_loss(spectrum.abs().clamp_min(LOG_CLAMP).log(), magnitude.clamp_min(LOG_CLAMP).log())

        # Phases come from angle(); a zero bin has angle 0 and a zero weight.
        phase, target = spectrum.angle(), reference.angle()
        weight = magnitude.detach()
        group_delay = _weighted_mean(
            anti_wrap(phase.diff(dim=1) - target.diff(dim=1)), (weight[:, 1:] * weight[:, :-1]).sqrt()
        )
        frequency = _weighted_mean(
            anti_wrap(phase.diff(dim=2) - target.diff(dim=2)), (weight[..., 1:] * weight[..., :-1]).sqrt()
        )
        return {"head": log_mag, "phase": group_delay + frequency}


def pitch_loss(log_f0: Tensor, voicing: Tensor, x: Tensor, n_fft: int, hop: int, low: float, high: float) -> Tensor:
    """The head's pitch against `codec.pitch.estimate_f0` of the reference x [B, 1, T]:
    L1 between log f0s on frames the tracker calls voiced, plus binary cross-entropy of the
    voicing logits. log_f0, voicing: [B, M] with T <= M * hop; f0 in cycles per sample."""
    frames = log_f0.shape[-1]
    x = F.pad(x, (0, frames * hop - x.shape[-1]))[:, 0].double()
    track = estimate_f0(x, n_fft, hop, low, high)
    voiced = track.voiced.float()
    error = (log_f0 - track.f0.log().float()).abs()
    f0_term = (error * voiced).sum() / voiced.sum().clamp_min(1.0)
    return f0_term + F.binary_cross_entropy_with_logits(voicing, voiced)


# Crops quieter than this (RMS, full scale 1) are left out of the losses that normalise level
# (SI-SDR, PESQ): for near-silence they divide by almost nothing.
LOUD_RMS = 10 ** (-45 / 20)


def loud_items(x: Tensor) -> Tensor:
    """x [B, T] -> [B] bool: the items louder than LOUD_RMS."""
    return x.square().mean(dim=1).sqrt() > LOUD_RMS


def si_sdr_loss(x_hat: Tensor, x: Tensor, floor_db: float = -30.0) -> Tensor:
    """x_hat, x [B, 1, T] -> minus the mean SI-SDR in dB over the loud items (`loud_items`).

    SI-SDR = 10 log10(rho^2 / (1 - rho^2)) with rho the correlation of the zero-mean signals,
    the same number `training.metrics.si_sdr` reports. rho^2 is floored at `floor_db`: a decoder
    whose phase is synthesised sits near rho = 0, where the log's slope has no bound.
    """
    reference, estimate = x[:, 0].float(), x_hat[:, 0].float()
    loud = loud_items(reference)
    if not loud.any():
        return x_hat.sum() * 0.0
    reference, estimate = reference[loud], estimate[loud]
    reference = reference - reference.mean(dim=1, keepdim=True)
    estimate = estimate - estimate.mean(dim=1, keepdim=True)
    rho = (reference * estimate).sum(dim=1) / (reference.norm(dim=1) * estimate.norm(dim=1) + 1e-8)
    share = rho.square().clamp(10 ** (floor_db / 10), 1 - 1e-6)
    return -(10 * torch.log10(share / (1 - share))).mean()


@functools.lru_cache(maxsize=8)
def _mel_distance_params(sample_rate: int) -> tuple[Tensor, Tensor]:
    return torch.hann_window(1024), _mel_fbank(1024, 80, sample_rate)


def mel_distance(a: Tensor, b: Tensor, sample_rate: int) -> Tensor:
    """Single-resolution log10-mel L1 (n_fft 1024, hop 256, 80 mels) for validation reports.

    a, b: [B, 1, T] -> scalar. Symmetric in its arguments; one fixed resolution so numbers stay
    comparable across runs whatever the training loss settings.
    """
    window, fbank = _mel_distance_params(sample_rate)
    window, fbank = window.to(a.device, a.dtype), fbank.to(a.device, a.dtype)
    return F.l1_loss(log_mel(a, window, 256, fbank), log_mel(b, window, 256, fbank))


def discriminator_loss(
    real_outputs: Sequence[DiscriminatorOutput], fake_outputs: Sequence[DiscriminatorOutput]
) -> Tensor:
    """Least-squares discriminator loss: mean over sub-discriminators of
    E[(1 - D(x))^2] + E[D(x_hat)^2]. Pass fake outputs computed on `x_hat.detach()`.

    Returns a scalar; 0 when every real logit is 1 and every fake logit is 0.
    """
    if len(real_outputs) != len(fake_outputs) or not real_outputs:
        raise ValueError("need the same, non-zero number of real and fake outputs")
    total = real_outputs[0].logits.new_zeros(())
    for real, fake in zip(real_outputs, fake_outputs):
        total = total + (1 - real.logits).pow(2).mean() + fake.logits.pow(2).mean()
    return total / len(real_outputs)


def generator_adversarial_loss(fake_outputs: Sequence[DiscriminatorOutput]) -> Tensor:
    """Least-squares generator loss: mean over sub-discriminators of E[(1 - D(x_hat))^2]."""
    if not fake_outputs:
        raise ValueError("need at least one discriminator output")
    total = fake_outputs[0].logits.new_zeros(())
    for fake in fake_outputs:
        total = total + (1 - fake.logits).pow(2).mean()
    return total / len(fake_outputs)


def feature_matching_loss(
    real_features: Sequence[Sequence[Tensor]], fake_features: Sequence[Sequence[Tensor]]
) -> Tensor:
    """Normalised L1 between discriminator feature maps (EnCodec).

    real_features, fake_features: one list of feature maps per sub-discriminator, e.g.
    `[o.features for o in outputs]`. Each layer contributes mean|real - fake| / mean|real|; the
    result is the mean over all layers of all sub-discriminators. Real features are treated as
    targets (detached), so no gradient reaches the discriminator through them.
    """
    terms = []
    for real_maps, fake_maps in zip(real_features, fake_features, strict=True):
        for real, fake in zip(real_maps, fake_maps, strict=True):
            real = real.detach()
            scale = real.abs().mean().clamp_min(1e-8)
            terms.append(F.l1_loss(fake, real) / scale)
    if not terms:
        raise ValueError("need at least one feature map")
    return torch.stack(terms).mean()
