"""The differentiable STOI loss follows pystoi (the metric we report) and passes gradients."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from pystoi import stoi as reference_stoi

from training.stoi_loss import StoiLoss, stoi

SPEECH = Path(__file__).parent / "data" / "arctic_a0009.wav"


@pytest.mark.parametrize("noise", [0.003, 0.03, 0.2])
def test_matches_pystoi_on_noisy_and_filtered_speech(noise):
    wav, rate = sf.read(SPEECH, dtype="float32")
    rng = np.random.default_rng(1)
    # Low-passed and noisy: changes band envelopes unevenly; silence at the start exercises
    # the silent-frame removal.
    smeared = np.convolve(wav, np.ones(9) / 9, mode="same")
    degraded = np.concatenate([np.zeros(8000), smeared + noise * rng.standard_normal(len(wav))]).astype(np.float32)
    clean = np.concatenate([np.zeros(8000), wav]).astype(np.float32)
    expected = reference_stoi(clean, degraded, rate)
    ours = float(stoi(torch.from_numpy(clean), torch.from_numpy(degraded), rate))
    assert abs(ours - expected) < 2e-3, (ours, expected)
    assert abs(float(stoi(torch.from_numpy(clean), torch.from_numpy(clean), rate)) - 1.0) < 1e-4


def test_loss_gradient_raises_stoi():
    wav, rate = sf.read(SPEECH, dtype="float32")
    x = torch.from_numpy(wav[: 2 * rate])[None, None]
    torch.manual_seed(0)
    y = (x + 0.1 * torch.randn_like(x)).requires_grad_()
    loss_fn = StoiLoss(rate)
    loss = loss_fn(y, x)
    loss.backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = y - 0.5 * y.grad / y.grad.abs().max() * 0.01
    assert float(loss_fn(stepped, x)) < float(loss.detach())


def test_items_too_short_or_silent_are_left_out():
    rate = 16000
    short = torch.randn(2, 1, 4000)  # 0.25 s: shorter than one 384 ms segment
    y = short.clone().requires_grad_()
    loss = StoiLoss(rate)(y, short)
    assert float(loss.detach()) == 0.0
    loss.backward()  # still part of the graph
    assert torch.isnan(stoi(short[0, 0], short[0, 0], rate))
