"""One optimisation step of the codec, with or without its discriminators.

`Trainer` holds what a step needs (model, losses, optimizers, discriminator) and `step(wav)` runs
one: the codec's forward pass, the discriminators' update, the codec's update. Both the training
script and the step benchmark (bench.train_step) drive it, so the benchmark times the step
that trains.

What keeps a GAN step cheap on a CPU:
- The networks run under bf16 autocast (`precision="bf16"`): convolutions and matmuls go to the
  AMX units; the head's FFTs and every loss stay in float32 (they take `.float()` inputs).
- The discriminators see a random `adversarial_seconds` crop of the first `adversarial_items`
  items (the same crop of real and fake), not the whole batch.
- They are updated on every `adversarial_every`-th step only; the generator's adversarial and
  feature-matching terms are computed on those steps alone, weighted up by the same factor
  so their share of the gradient does not change.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from codec.model import CodecModel, CodecOutput
from training.discriminators import Discriminator
from training.losses import (
    HeadSpectrumLoss,
    MelLoss,
    MultiResolutionSTFTLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    pitch_loss,
    si_sdr_loss,
)
from training.pesq_loss import PesqLoss
from training.stoi_loss import StoiLoss


class Losses:
    """The named losses of one step, weighted by the config's lambdas."""

    def __init__(self, lambdas: dict[str, float], model: CodecModel, device: torch.device):
        self.lambdas = lambdas
        self.mel = MelLoss(model.sample_rate).to(device)
        self.stft = MultiResolutionSTFTLoss().to(device)
        head, decoder = model.decoder.head, model.config.decoder
        self.head = HeadSpectrumLoss(head.n_fft, head.hop)
        self.pitch_range = (decoder.pitch_min_hz / model.sample_rate, decoder.pitch_max_hz / model.sample_rate)
        self.stoi = StoiLoss(model.sample_rate)
        self.pesq = PesqLoss(model.sample_rate).to(device) if self.lambdas.get("pesq", 0) else None

    def reconstruction(self, output: CodecOutput, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """The reconstruction terms with a non-zero weight (and the commitment loss), by name."""
        losses = {}
        if self.lambdas.get("mel", 0):
            losses["mel"] = self.mel(output.audio, wav)
        if self.lambdas.get("stft", 0):
            losses["stft"] = self.stft(output.audio, wav)
        if self.lambdas.get("head", 0) or self.lambdas.get("phase", 0):
            losses.update(self.head(output.spectrum, wav))
        if self.lambdas.get("pitch", 0):
            losses["pitch"] = pitch_loss(
                output.log_f0, output.voicing, wav, self.head.n_fft, self.head.hop, *self.pitch_range
            )
        if self.lambdas.get("stoi", 0):
            losses["stoi"] = self.stoi(output.audio, wav)
        if self.pesq is not None:
            losses["pesq"] = self.pesq(output.audio, wav)
        if self.lambdas.get("sisdr", 0):
            losses["sisdr"] = si_sdr_loss(output.audio, wav)
        losses["commitment"] = output.commitment_loss
        return losses

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        # Zero-weight terms are left out, not multiplied by 0: a NaN in one would poison the sum.
        return sum(self.lambdas[name] * value for name, value in losses.items() if self.lambdas.get(name, 0.0))


@dataclass(frozen=True)
class StepOptions:
    precision: str = "fp32"  # "fp32" or "bf16" (autocast for the networks' forward passes)
    grad_clip: float = 1.0
    adversarial_start: int = 0  # first step with discriminators
    adversarial_items: int = 0  # items of each batch the discriminators see (0: all)
    adversarial_seconds: float = 0.0  # crop length they see (0: the whole segment)
    adversarial_every: int = 1  # discriminator (and adversarial generator terms) every n-th step
    sample_rate: int = 16000


@dataclass
class StepResult:
    losses: dict[str, torch.Tensor]  # named, unweighted, detached
    total: torch.Tensor  # the weighted sum the codec was updated with
    grad_norm: torch.Tensor  # codec gradient norm before clipping
    applied: bool  # False: the gradient was not finite and the update was skipped


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix work is fast on `device`: a GPU, or a CPU with AMX or AVX-512 BF16.
    Elsewhere (an AVX2-only CPU, say) PyTorch emulates bf16 matmuls, a hundred times slower than
    float32."""
    if device.type == "cuda":
        return True
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def autocast(device: torch.device, precision: str):
    """The autocast context for `precision` on `device` (a no-op for fp32; "auto": bf16 where
    `fast_bf16`, else fp32)."""
    if precision == "auto":
        precision = "bf16" if fast_bf16(device) else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


@dataclass
class Trainer:
    model: CodecModel
    train_model: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    losses: object  # training.train.Losses
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    options: StepOptions
    discriminator: Discriminator | None = None
    train_discriminator: torch.nn.Module | None = None
    d_optimizer: torch.optim.Optimizer | None = None
    d_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    trainable: list[torch.nn.Parameter] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.trainable:
            self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.device = next(self.model.parameters()).device

    def checkpointables(self) -> tuple[dict, dict, dict]:
        """(modules, optimizers, schedulers) by name, as training.state saves them."""
        modules, optimizers, schedulers = {"codec": self.model}, {"codec": self.optimizer}, {"codec": self.scheduler}
        if self.discriminator is not None:
            modules["discriminator"] = self.discriminator
            optimizers["discriminator"], schedulers["discriminator"] = self.d_optimizer, self.d_scheduler
        return modules, optimizers, schedulers

    def _adversarial_now(self, step: int) -> bool:
        o = self.options
        return (
            self.discriminator is not None
            and step >= o.adversarial_start
            and (step - o.adversarial_start) % o.adversarial_every == 0
        )

    def _crop(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.options
        real, fake = real[: o.adversarial_items or None], fake[: o.adversarial_items or None]
        length = int(o.adversarial_seconds * o.sample_rate)
        if 0 < length < real.shape[-1]:
            start = int(torch.randint(0, real.shape[-1] - length + 1, ()))
            real, fake = real[..., start : start + length], fake[..., start : start + length]
        return real, fake

    def step(self, wav: torch.Tensor, step: int) -> StepResult:
        """One update from a batch wav [B, 1, T]; `step` is the number of steps done before it."""
        o = self.options
        with autocast(self.device, o.precision):
            output = self.train_model(wav)
        losses = self.losses.reconstruction(output, wav)

        if self._adversarial_now(step):
            real_wav, fake_wav = self._crop(wav, output.audio.float())
            with autocast(self.device, o.precision):
                d_loss = discriminator_loss(
                    self.train_discriminator(real_wav), self.train_discriminator(fake_wav.detach())
                )
            self.d_optimizer.zero_grad(set_to_none=True)
            d_loss.float().backward()
            torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), o.grad_clip * 10)
            self.d_optimizer.step()
            # The generator's terms go through the bare discriminator with its weights frozen:
            # only the codec needs gradients, and the real features are targets.
            self.discriminator.requires_grad_(False)
            with autocast(self.device, o.precision):
                with torch.no_grad():
                    real = self.discriminator(real_wav)
                fake = self.discriminator(fake_wav)
                adv = generator_adversarial_loss(fake).float()
                feat = feature_matching_loss([r.features for r in real], [f.features for f in fake]).float()
            self.discriminator.requires_grad_(True)
            losses["adv"], losses["feat"] = adv * o.adversarial_every, feat * o.adversarial_every
            losses["disc"] = d_loss.detach().float()
        if self.d_scheduler is not None:
            self.d_scheduler.step()  # every step, so its schedule follows the codec's

        total = self.losses.total(losses)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, o.grad_clip)
        applied = bool(torch.isfinite(grad_norm))
        if applied:
            self.optimizer.step()
        # else: one bad batch (a loss dividing 0 by 0) must not turn every weight into NaN. The
        # gradients are all-reduced first, so every rank skips the same steps.
        self.scheduler.step()
        named = {k: v.detach() / (o.adversarial_every if k in ("adv", "feat") else 1) for k, v in losses.items()}
        return StepResult(named, total.detach(), grad_norm.detach(), applied)
