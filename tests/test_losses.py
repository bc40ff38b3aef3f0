"""Tests for training losses and discriminators on tiny seeded CPU tensors."""

import math

import pytest
import torch

from codec.decoder import ISTFTHead, analysis_stft
from training.discriminators import (
    Discriminator,
    DiscriminatorConfig,
    DiscriminatorOutput,
    MultiPeriodDiscriminator,
    MultiResolutionSTFTDiscriminator,
)
from training.losses import (
    HeadSpectrumLoss,
    MelLoss,
    MultiResolutionSTFTLoss,
    anti_wrap,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_distance,
    si_sdr_loss,
)
from training.metrics import si_sdr

SR = 16_000
T = 2048  # just over 2 x the largest half-window (1024) the default losses reflect-pad by
TINY = DiscriminatorConfig(periods=(2, 3), mpd_channels=4, mpd_max_channels=8, stft_n_ffts=(256, 128), stft_channels=4)


def _target(batch: int = 2) -> torch.Tensor:
    """A voiced-like test signal: two harmonics plus a little noise, [B, 1, T]."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(T) / SR
    tone = 0.5 * torch.sin(2 * math.pi * 220 * t) + 0.2 * torch.sin(2 * math.pi * 1320 * t)
    return (tone + 0.01 * torch.randn(batch, 1, T, generator=g)).reshape(batch, 1, T)


def _noise(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 1, T, generator=torch.Generator().manual_seed(seed))


RECON_LOSSES = [
    pytest.param(lambda: MultiResolutionSTFTLoss(), id="mrstft"),
    pytest.param(lambda: MelLoss(SR), id="mel"),
    pytest.param(lambda: lambda a, b: mel_distance(a, b, SR), id="mel_distance"),
]


@pytest.mark.parametrize("make_loss", RECON_LOSSES)
def test_reconstruction_loss_zero_for_identical_positive_for_different(make_loss):
    loss_fn = make_loss()
    x = _target()
    same = loss_fn(x.clone(), x)
    different = loss_fn(_noise(), x)
    assert same.shape == () and different.shape == ()
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    assert different.item() > 0.1


@pytest.mark.parametrize("make_loss", RECON_LOSSES)
def test_reconstruction_loss_gradients_reach_x_hat(make_loss):
    loss_fn = make_loss()
    x = _target()
    x_hat = (x + 0.1 * _noise()).requires_grad_(True)
    loss_fn(x_hat, x).backward()
    assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0


@pytest.mark.parametrize("make_loss", RECON_LOSSES)
def test_reconstruction_loss_finite_gradient_for_silent_estimate(make_loss):
    # A decoder that outputs exact zeros early in training must not produce NaN gradients.
    x_hat = torch.zeros(2, 1, T, requires_grad=True)
    loss = make_loss()(x_hat, _target())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x_hat.grad).all()


def test_mel_loss_decreases_as_estimate_approaches_target():
    loss_fn = MelLoss(SR)
    x, noise = _target(), _noise()
    losses = [loss_fn(x + level * noise, x).item() for level in (1.0, 0.3, 0.1, 0.03)]
    assert losses == sorted(losses, reverse=True)
    assert losses[-1] < 0.5 * losses[0]


def test_si_sdr_loss_is_minus_the_reported_si_sdr_and_skips_silent_items():
    torch.manual_seed(0)
    x = torch.randn(3, 1, T)
    x[2] = 0.0  # silent: left out
    y = (x + 0.5 * torch.randn_like(x)).requires_grad_()
    loss = si_sdr_loss(y, x)
    expected = [si_sdr(x[i, 0].numpy(), y[i, 0].detach().numpy()) for i in range(2)]
    assert float(loss.detach()) == pytest.approx(-sum(expected) / 2, abs=1e-3)
    loss.backward()
    assert torch.isfinite(y.grad).all() and y.grad[:2].abs().sum() > 0 and y.grad[2].abs().sum() == 0
    # No correlation at all: SI-SDR is floored at -30 dB instead of running to minus infinity.
    assert float(si_sdr_loss(torch.full((2, 1, T), 1e-3), x[:2])) == pytest.approx(30.0, abs=0.01)


def test_mel_distance_is_symmetric():
    a, b = _target(), _noise()
    assert mel_distance(a, b, SR).item() == pytest.approx(mel_distance(b, a, SR).item())


def test_mrstft_loss_windows_follow_module_device_but_not_checkpoint():
    loss_fn = MultiResolutionSTFTLoss(n_ffts=(256, 128))
    assert {"window_256", "window_128"} <= {name for name, _ in loss_fn.named_buffers()}
    assert loss_fn.state_dict() == {}


def _outputs(*logits: float) -> list[DiscriminatorOutput]:
    return [DiscriminatorOutput(torch.full((2, 1, 3, 4), v), []) for v in logits]


def test_least_squares_gan_losses_on_hand_made_logits():
    assert discriminator_loss(_outputs(1.0, 1.0), _outputs(0.0, 0.0)).item() == 0.0
    # Each term is 1 when the discriminator is exactly wrong; averaged over 2 sub-discriminators.
    assert discriminator_loss(_outputs(0.0, 0.0), _outputs(1.0, 1.0)).item() == pytest.approx(2.0)
    assert discriminator_loss(_outputs(0.5), _outputs(0.5)).item() == pytest.approx(0.5)
    assert generator_adversarial_loss(_outputs(1.0, 1.0)).item() == 0.0
    assert generator_adversarial_loss(_outputs(0.0, 1.0)).item() == pytest.approx(0.5)


def test_feature_matching_is_normalised_by_real_magnitude_and_detaches_real():
    def maps(first: float) -> list[list[torch.Tensor]]:
        return [
            [
                torch.full((2, 3), first, requires_grad=True),
                torch.full((4,), 4.0, requires_grad=True),
            ]
        ]

    real, fake = maps(2.0), maps(1.0)
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx((0.5 + 0.0) / 2)
    loss.backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None
    assert feature_matching_loss(real, real).item() == 0.0


def test_discriminator_outputs_one_result_per_sub_discriminator():
    torch.manual_seed(0)
    disc = Discriminator(TINY)
    x = torch.randn(3, 1, 1000, requires_grad=True)
    outputs = disc(x)
    assert len(outputs) == len(TINY.periods) + len(TINY.stft_n_ffts)
    for out in outputs:
        assert out.logits.dim() == 4 and out.logits.shape[:2] == (3, 1)
        assert len(out.features) == 5 and all(f.shape[0] == 3 for f in out.features)
    # Period discriminators keep the period as the last axis; 1000 is padded to a multiple of 3.
    assert outputs[0].logits.shape[-1] == 2 and outputs[1].logits.shape[-1] == 3
    # STFT discriminators: frames = 1 + (T - n_fft) // hop, bins halved 3 times by stride 2.
    assert outputs[2].logits.shape[2:] == (1 + (1000 - 256) // 64, 17)
    sum(o.logits.mean() for o in outputs).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_sub_discriminators_match_wrapper_and_default_config_builds():
    mpd = MultiPeriodDiscriminator(periods=(5,), channels=4, max_channels=8)
    mrsd = MultiResolutionSTFTDiscriminator(n_ffts=(128,), channels=4)
    x = torch.randn(1, 1, 640)
    assert len(mpd(x)) == 1 and len(mrsd(x)) == 1
    assert len(Discriminator()(torch.randn(1, 1, 1024))) == 8


def test_gan_losses_train_end_to_end_on_discriminator_outputs():
    torch.manual_seed(0)
    disc = Discriminator(TINY)
    x, x_hat = _target(), (0.1 * _noise()).requires_grad_(True)
    d_loss = discriminator_loss(disc(x), disc(x_hat.detach()))
    d_loss.backward()
    assert x_hat.grad is None and all(p.grad is not None for p in disc.parameters())
    real, fake = disc(x), disc(x_hat)
    g_loss = generator_adversarial_loss(fake) + feature_matching_loss(
        [o.features for o in real], [o.features for o in fake]
    )
    g_loss.backward()
    assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0


def test_analysis_stft_is_what_the_istft_head_inverts():
    head = ISTFTHead(channels=4, n_fft=256, hop=64)
    x = _target()
    assert torch.allclose(head.synthesize(analysis_stft(x, 256, 64)), x, atol=1e-5)


def test_anti_wrap_is_the_distance_between_phases():
    x = torch.tensor([0.0, 0.5, -0.5, 2 * math.pi, 2 * math.pi + 0.25, math.pi - 0.1, -3 * math.pi + 0.1])
    assert torch.allclose(
        anti_wrap(x), torch.tensor([0.0, 0.5, 0.5, 0.0, 0.25, math.pi - 0.1, math.pi - 0.1]), atol=1e-5
    )


def test_head_spectrum_loss_zero_for_the_reference_and_grows_with_phase_error():
    x = _target()
    loss = HeadSpectrumLoss(256, 64)
    reference = analysis_stft(x, 256, 64)
    exact = loss(reference, x)
    assert exact["head"].item() < 1e-4 and exact["phase"].item() < 1e-3
    # A constant phase shift leaves the group delay and instantaneous frequency alone: the head's
    # running phase starts wherever the crop starts.
    shifted = loss(reference * torch.polar(torch.ones(()), torch.tensor(0.7)), x)
    assert shifted["head"].item() < 1e-4 and shifted["phase"].item() < 1e-3
    # Random phases cost more, and their gradient reaches the estimate.
    g = torch.Generator().manual_seed(0)
    phase = (2 * math.pi * torch.rand(reference.shape, generator=g)).requires_grad_()
    noisy = loss(torch.polar(reference.abs(), phase), x)
    assert noisy["phase"].item() > 2.0
    noisy["phase"].backward()
    assert phase.grad.abs().sum() > 0
