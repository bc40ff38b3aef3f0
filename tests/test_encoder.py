"""The encoder's STFT features, and moving a trained magnitude-only encoder onto phase features."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from codec import Codec, build_model
from codec.config import tiny_config


def with_features(features: str):
    config = tiny_config()
    return dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, features=features))


def test_phase_features_carry_what_log_magnitudes_cannot():
    """A shifted copy of a tone has the same magnitudes but other phases: only "logmag+phase"
    features tell the two apart, and their first third is the log-magnitudes."""
    t = torch.arange(16000) / 16000
    a = torch.sin(2 * torch.pi * 200 * t)[None, None]
    b = torch.sin(2 * torch.pi * 200 * t + 1.0)[None, None]
    plain = build_model(with_features("logmag")).encoder
    both = build_model(with_features("logmag+phase")).encoder
    fa, fb = both.features(a), both.features(b)
    bins = plain.features(a).shape[1]
    assert fa.shape[1] == 3 * bins
    assert torch.equal(fa[:, :bins], plain.features(a))
    middle = slice(10, -10)  # frames away from the zero-padded ends
    strong = fa[:, :bins, middle] > 0.5  # bins near the tone; the rest is window leakage
    assert strong.sum() > 0
    assert torch.allclose(fa[:, :bins, middle][strong], fb[:, :bins, middle][strong], atol=1e-3)
    phase_a, phase_b = fa[:, bins:, middle], fb[:, bins:, middle]
    assert (phase_a - phase_b)[strong.repeat(1, 2, 1)].abs().max() > 0.5


@pytest.mark.parametrize("features, inputs", [("logmag+phase", lambda bins: 3 * bins), ("logmag+f0", lambda bins: bins + 2)])
def test_warm_start_moves_a_magnitude_encoder_onto_richer_features(tmp_path, features, inputs):
    """The trained weights come over whole and the new inputs get zero weights, so the grown
    encoder computes the same latents as the one it came from (and so the same codes)."""
    from training.train import warm_start

    torch.manual_seed(1)
    old = build_model(with_features("logmag")).eval()
    Codec(old, "vqcodec-tiny:logmag").save(tmp_path / "logmag.safetensors")
    torch.manual_seed(2)
    model = build_model(with_features(features)).eval()
    warm_start(model, str(tmp_path / "logmag.safetensors"), announce=False)
    saved = Codec.load(tmp_path / "logmag.safetensors").model.float()
    wav = torch.randn(2, 1, 16000) * 0.1
    with torch.no_grad():
        assert torch.allclose(model.encoder(wav), saved.encoder(wav), atol=1e-5)
        for name, tensor in model.quantizer.state_dict().items():
            assert torch.equal(tensor, saved.quantizer.state_dict()[name]), name
    weight = model.encoder.input.weight
    bins = old.encoder.input.weight.shape[1]
    assert weight.shape[1] == inputs(bins)
    assert not weight[:, bins:].any() and weight[:, :bins].any()


def test_f0_features_give_the_tone_frequency_finer_than_a_bin():
    """Two tones 1% apart (200 and 202 Hz) fall in the same 25 Hz bin; the f0 channel tells them
    apart by the right amount, and is zero (unvoiced) in silence."""
    t = torch.arange(16000) / 16000
    encoder = build_model(with_features("logmag+f0")).encoder
    from codec.encoder import LOG_F0_CENTRE, LOG_F0_SCALE

    middle = slice(10, -10)
    feats = {}
    for hz in (200.0, 202.0):
        f = encoder.features(torch.sin(2 * torch.pi * hz * t)[None, None])
        assert (f[0, -2, middle] == 1).all()  # voiced
        feats[hz] = f[0, -1, middle] * LOG_F0_SCALE + LOG_F0_CENTRE  # log f0, cycles per sample
    for hz, log_f0 in feats.items():
        assert torch.allclose(log_f0.exp() * 16000, torch.full_like(log_f0, hz), rtol=2e-3)
    silent = encoder.features(torch.zeros(1, 1, 16000))
    assert not silent[0, -2:].any()
