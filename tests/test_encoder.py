"""The encoder's STFT features, and moving a trained magnitude-only encoder onto phase features."""

from __future__ import annotations

import dataclasses

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


def test_warm_start_moves_a_magnitude_encoder_onto_phase_features(tmp_path):
    """The trained weights come over whole and the new inputs get zero weights, so the grown
    encoder computes the same latents as the one it came from (and so the same codes)."""
    from training.train import warm_start

    torch.manual_seed(1)
    old = build_model(with_features("logmag")).eval()
    Codec(old, "vqcodec-tiny:logmag").save(tmp_path / "logmag.safetensors")
    torch.manual_seed(2)
    model = build_model(with_features("logmag+phase")).eval()
    warm_start(model, str(tmp_path / "logmag.safetensors"), announce=False)
    saved = Codec.load(tmp_path / "logmag.safetensors").model.float()
    wav = torch.randn(2, 1, 16000) * 0.1
    with torch.no_grad():
        assert torch.allclose(model.encoder(wav), saved.encoder(wav), atol=1e-5)
        for name, tensor in model.quantizer.state_dict().items():
            assert torch.equal(tensor, saved.quantizer.state_dict()[name]), name
    weight = model.encoder.input.weight
    bins = weight.shape[1] // 3
    assert not weight[:, bins:].any() and weight[:, :bins].any()
