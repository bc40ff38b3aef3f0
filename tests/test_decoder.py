"""The decoder's inverse-STFT head and the config that builds it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tiny import tiny_config

from codec import Codec, build_model
from codec.api import BUNDLED_CHECKPOINT
from codec.checkpoint import read_checkpoint
from codec.config import CodecConfig
from codec.decoder import ISTFTHead


def steady_tone(f0_hz: float, bins: list[int], voiced: bool = True) -> np.ndarray:
    """Synthesise 2 s from identical frames that put all energy in `bins` (16 kHz, 640-point FFT,
    hop 160: bins 25 Hz apart, frames 100 per second), voiced at `f0_hz` or unvoiced."""
    head = ISTFTHead(channels=1, n_fft=640, hop=160)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.zero_()
        head.proj.bias[:321].fill_(-20.0)
        head.proj.bias[:321][bins] = 0.0
        last = head.pitch.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 5.0 if voiced else -5.0]))  # (f0 logit, voicing logit)
        frames = torch.ones(1, 1, 200)
        log_f0 = torch.full((1, 200), math.log(f0_hz / 16000))
        out = head.spectrum(frames, pitch=(log_f0, torch.ones(1, 200, dtype=torch.bool)))
        return head.synthesize(out.spectrum)[0, 0].numpy()


def peak_frequency(x: np.ndarray, sample_rate: int = 16000) -> float:
    middle = x[len(x) // 4 : 3 * len(x) // 4]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    return float(np.fft.rfftfreq(len(middle), 1 / sample_rate)[spectrum.argmax()])


@pytest.mark.parametrize("f0_hz", [112.0, 180.0, 237.0])
def test_a_voiced_frame_renders_its_f0_not_a_multiple_of_the_frame_rate(f0_hz):
    # Identical frames with a per-frame phase repeat every hop, so they can only hold multiples of
    # the 100 Hz frame rate; the running phase of the pulse train moves at f0.
    nearest_bin = round(f0_hz / 25)
    assert peak_frequency(steady_tone(f0_hz, [nearest_bin])) == pytest.approx(f0_hz, abs=1.5)
    unvoiced = peak_frequency(steady_tone(f0_hz, [nearest_bin], voiced=False))
    assert unvoiced % 100 == pytest.approx(0, abs=1.5) or unvoiced % 100 == pytest.approx(100, abs=1.5)


def test_the_defaults_build_the_shipped_model():
    shipped = CodecConfig.from_dict(read_checkpoint(BUNDLED_CHECKPOINT, "codec").config)
    assert shipped == CodecConfig()


def test_retired_fields_load_at_the_built_value_and_refuse_any_other():
    data = json.loads(json.dumps(tiny_config().to_dict()))
    stored = {
        **data,
        "decoder": {**data["decoder"], "phase": "harmonic", "phase_group": 4, "linear_skip": True},
        "quantizer": {**data["quantizer"], "distance": "euclidean", "codebook_dim": 8, "update": "ema"},
        "encoder": {**data["encoder"], "features": "logmag"},
    }
    assert CodecConfig.from_dict(stored) == tiny_config()
    for part, name, value in (
        ("decoder", "phase", "direct"),
        ("quantizer", "distance", "cosine"),
        ("encoder", "features", "compressed"),
        ("decoder", "linear_skip", False),
    ):
        other = {**stored, part: {**stored[part], name: value}}
        with pytest.raises(ValueError, match=f"{part}.{name}"):
            CodecConfig.from_dict(other)
    with pytest.raises(ValueError, match="unknown DecoderConfig fields"):
        CodecConfig.from_dict({**data, "decoder": {**data["decoder"], "colour": "blue"}})


def test_warm_start_keeps_parts_whose_config_matches_and_reinitialises_the_others(tmp_path):
    from training.train import warm_start

    torch.manual_seed(1)
    old = build_model(tiny_config()).eval()
    Codec(old, "vqcodec-tiny:old").save(tmp_path / "old.safetensors")
    saved = Codec.load(tmp_path / "old.safetensors").model.state_dict()
    torch.manual_seed(2)
    data = json.loads(json.dumps(tiny_config().to_dict()))
    data["decoder"].update(channels=48, skip_channels=48)
    data["quantizer"].update(level_dropout=0.25)
    wider = CodecConfig.from_dict(data)
    model = build_model(wider)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    warm_start(model, str(tmp_path / "old.safetensors"), announce=False)
    for name, tensor in model.state_dict().items():
        if name.startswith("decoder."):
            assert torch.equal(tensor, fresh[name]), name
        else:  # the quantizer differs in a training setting only: its codebooks carry over
            assert torch.equal(tensor, saved[name].to(tensor.dtype)), name
