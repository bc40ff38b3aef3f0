"""The differentiable STOI loss follows pystoi (the metric we report) and passes gradients."""

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SPEECH, assert_gradient_step_lowers
from pystoi import stoi as reference_stoi

from training.stoi_loss import StoiLoss, stoi


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
    assert_gradient_step_lowers(StoiLoss(16000), noise=0.1, step=0.005)


def test_items_too_short_or_silent_are_left_out():
    rate = 16000
    short = torch.randn(2, 1, 4000)  # 0.25 s: shorter than one 384 ms segment
    y = short.clone().requires_grad_()
    loss = StoiLoss(rate)(y, short)
    assert float(loss.detach()) == 0.0
    loss.backward()  # still part of the graph
    assert torch.isnan(stoi(short[0, 0], short[0, 0], rate))
