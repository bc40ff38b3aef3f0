"""The encoder's STFT log-magnitude features and its frame-rate output."""

from __future__ import annotations

import torch
from tiny import tiny_config

from codec import build_model


def test_features_are_log_magnitudes_blind_to_phase():
    """A shifted copy of a tone has the same magnitudes but other phases: the encoder sees the
    same features for both, scaled to about [-2, 2]."""
    t = torch.arange(16000) / 16000
    a = torch.sin(2 * torch.pi * 200 * t)[None, None]
    b = torch.sin(2 * torch.pi * 200 * t + 1.0)[None, None]
    encoder = build_model(tiny_config()).encoder
    fa, fb = encoder.features(a), encoder.features(b)
    assert fa.shape == (1, 321, 16000 // 160)
    middle = slice(10, -10)  # frames away from the zero-padded ends
    strong = fa[:, :, middle] > 0.5  # bins near the tone; the rest is window leakage
    assert strong.sum() > 0
    assert torch.allclose(fa[:, :, middle][strong], fb[:, :, middle][strong], atol=1e-3)
    assert fa.min() >= -2.0 and fa.max() < 2.5
    silent = encoder.features(torch.zeros(1, 1, 16000))
    assert torch.allclose(silent, torch.full_like(silent, (torch.tensor(1e-5).log().item() + 4.0) / 4.0))


def test_latents_run_at_the_code_frame_rate():
    model = build_model(tiny_config())
    latents = model.encoder(torch.randn(2, 1, 320 * 7) * 0.1)
    assert latents.shape == (2, model.config.encoder.latent_dim, 7)
