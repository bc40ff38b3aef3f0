"""The differentiable PESQ loss (torch-pesq) tracks the PESQ we report and passes gradients."""

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SPEECH, assert_gradient_step_lowers

pytest.importorskip("torch_pesq")
from pesq import pesq as reference_pesq  # noqa: E402

from training.pesq_loss import PesqLoss  # noqa: E402


def degraded_versions(wav: np.ndarray) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    smeared = np.convolve(wav, np.ones(9) / 9, mode="same")
    return [(smeared + noise * rng.standard_normal(len(wav))).astype(np.float32) for noise in (0.001, 0.01, 0.05, 0.2)]


def test_mos_orders_degradations_like_pesq():
    wav, rate = sf.read(SPEECH, dtype="float32")
    versions = degraded_versions(wav)
    expected = [reference_pesq(rate, wav, y, "wb") for y in versions]
    x = torch.from_numpy(wav)[None, None].expand(len(versions), 1, -1)
    ours = PesqLoss(rate).mos(torch.from_numpy(np.stack(versions))[:, None], x).tolist()
    assert np.argsort(ours).tolist() == np.argsort(expected).tolist(), (ours, expected)
    assert np.corrcoef(ours, expected)[0, 1] > 0.9, (ours, expected)


def test_loss_gradient_raises_mos():
    assert_gradient_step_lowers(PesqLoss(16000), noise=0.05, step=0.01)


def test_silent_items_are_left_out():
    rate = 16000
    silent = torch.zeros(2, 1, rate)
    y = (silent + 1e-4 * torch.randn_like(silent)).requires_grad_()
    loss = PesqLoss(rate)(y, silent)
    assert float(loss.detach()) == 0.0
    loss.backward()  # still part of the graph
    wav, _ = sf.read(SPEECH, dtype="float32")
    mixed = torch.zeros(2, 1, rate)
    mixed[1, 0] = torch.from_numpy(wav[:rate])
    loss = PesqLoss(rate)(mixed + 0.01 * torch.randn_like(mixed), mixed)
    assert torch.isfinite(loss) and float(loss) > 0


def test_items_pesq_cannot_score_get_no_gradient_and_the_others_keep_theirs():
    rate = 16000
    wav, _ = sf.read(SPEECH, dtype="float32")
    speech = torch.from_numpy(wav[:rate])
    click = torch.zeros(rate)
    click[rate // 2] = 0.9
    x = torch.stack([speech, click, speech])[:, None]
    torch.manual_seed(0)
    # A silent estimate makes torch-pesq divide 0 by 0; an exact copy of a click leaves windows
    # without audible error, whose float32 sixth powers underflow. Neither may send NaN back.
    y = torch.stack([speech + 0.01 * torch.randn(rate), click, torch.zeros(rate)])[:, None].requires_grad_()
    loss = PesqLoss(rate)(y, x)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    assert torch.isfinite(y.grad).all()
    assert y.grad[0].abs().sum() > 0 and y.grad[2].abs().sum() == 0
