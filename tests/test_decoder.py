"""The decoder's inverse-STFT head: what a direct and an integrated phase can render."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from codec import Codec, build_model
from codec.config import CodecConfig, tiny_config
from codec.decoder import ISTFTHead


def steady_tone(phase: str, bins: list[int], phase_group: int = 1) -> np.ndarray:
    """Synthesise 2 s from identical frames that put all energy in `bins` (16 kHz, 640-point FFT,
    hop 160: bins 25 Hz apart, frames 100 per second)."""
    head = ISTFTHead(channels=1, n_fft=640, hop=160, phase=phase, phase_group=phase_group)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.zero_()
        log_magnitude = head.proj.bias[:321]
        log_magnitude.fill_(-20.0)
        log_magnitude[bins] = 0.0
        # Frames are referenced to their first sample, so a sinusoid's neighbouring bins differ
        # in phase by pi.
        head.proj.bias[321:][bins] = torch.tensor([math.pi * (k % 2) for k in bins])
        return head(torch.ones(1, 1, 200))[0, 0].numpy()


def peak_frequency(x: np.ndarray, sample_rate: int = 16000) -> float:
    middle = x[len(x) // 4 : 3 * len(x) // 4]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    return float(np.fft.rfftfreq(len(middle), 1 / sample_rate)[spectrum.argmax()])


@pytest.mark.parametrize("bin_index", [7, 9, 30])
def test_integrated_phase_renders_a_steady_tone_at_its_own_frequency(bin_index):
    # A direct head repeats the same frame every hop, so its output is periodic in the hop and
    # can only hold multiples of the 100 Hz frame rate; 175, 225 and 750 Hz need the phase to move.
    frequency = bin_index * 25.0
    assert peak_frequency(steady_tone("integrated", [bin_index])) == pytest.approx(frequency, abs=1.0)
    direct = peak_frequency(steady_tone("direct", [bin_index]))
    assert direct % 100 == pytest.approx(0, abs=1.0) or direct % 100 == pytest.approx(100, abs=1.0)
    if bin_index % 4:
        assert abs(direct - frequency) >= 20


def test_grouped_bins_turn_together_at_the_groups_centre_frequency():
    # Bins 4-7 form the second group of 4; its nominal advance is that of 5.5 bins (137.5 Hz).
    assert peak_frequency(steady_tone("integrated", [5, 6], phase_group=4)) == pytest.approx(137.5, abs=1.0)


def test_checkpoints_without_a_phase_field_load_as_direct():
    data = CodecConfig().to_dict()
    del data["decoder"]["phase"], data["decoder"]["phase_group"]
    assert CodecConfig.from_dict(data).decoder.phase == "direct"
    assert CodecConfig().decoder.phase == "direct"
    with pytest.raises(ValueError, match="phase"):
        dataclasses.replace(CodecConfig(), decoder=dataclasses.replace(CodecConfig().decoder, phase="random"))


@pytest.mark.parametrize("phase", ["integrated", "harmonic"])
def test_warm_start_moves_a_direct_decoder_into_a_summed_phase_one(tmp_path, phase):
    from training.train import warm_start

    config = tiny_config()
    config = dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, phase=phase))
    direct_config = dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, phase="direct"))
    torch.manual_seed(1)
    Codec(build_model(direct_config).eval(), "vqcodec-tiny:direct").save(tmp_path / "direct.safetensors")
    torch.manual_seed(2)
    model = build_model(config)
    if phase == "integrated":
        torch.nn.init.normal_(model.decoder.head.advance.weight)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    warm_start(model, str(tmp_path / "direct.safetensors"), announce=False)
    warm = Codec.load(tmp_path / "direct.safetensors").model.state_dict()
    for name, tensor in model.state_dict().items():
        if name.startswith("decoder.head.advance."):
            assert not tensor.any(), name  # zero: the advances start at the nominal ones
        elif name.startswith("decoder.head.pitch."):
            assert torch.equal(tensor, fresh[name]), name
        else:
            assert torch.equal(tensor, warm[name].float() if tensor.is_floating_point() else warm[name]), name


def with_align(config: CodecConfig, align: bool) -> CodecConfig:
    return dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, phase_align=align))


def test_phase_align_needs_the_harmonic_head():
    direct = dataclasses.replace(tiny_config(), decoder=dataclasses.replace(tiny_config().decoder, phase="direct"))
    with pytest.raises(ValueError, match="phase_align"):
        with_align(direct, True)
    data = tiny_config().to_dict()
    del data["decoder"]["phase_align"]
    assert CodecConfig.from_dict(data).decoder.phase_align is False  # checkpoints from before it


def test_warm_start_adds_the_phase_align_layer_at_zero_and_keeps_the_output(tmp_path):
    from training.train import warm_start

    torch.manual_seed(1)
    old = build_model(tiny_config()).eval()
    Codec(old, "vqcodec-tiny:plain").save(tmp_path / "plain.safetensors")
    torch.manual_seed(2)
    model = build_model(with_align(tiny_config(), True)).eval()
    warm_start(model, str(tmp_path / "plain.safetensors"), announce=False)
    saved = Codec.load(tmp_path / "plain.safetensors").model.float().eval()
    assert not model.decoder.head.align.weight.any() and not model.decoder.head.align.bias.any()
    wav = torch.randn(1, 1, 8000) * 0.1
    with torch.no_grad():
        assert torch.allclose(model(wav).audio, saved(wav).audio, atol=1e-5)


def test_the_align_offset_moves_the_pulses_and_learns_from_the_waveform():
    """With the pitch head forced voiced, the offset shifts the fundamental's phase: a constant
    offset (a, b) = (-1, 1) turns e^{i theta} - 1 + i, changing the output, and a waveform loss
    sends gradient into the layer (none reaches it through the running phase itself)."""
    torch.manual_seed(0)
    model = build_model(with_align(tiny_config(), True)).eval()
    head = model.decoder.head
    with torch.no_grad():
        head.pitch.net[-1].bias.copy_(torch.tensor([0.0, 5.0]))  # voiced, f0 mid-range
    wav = torch.randn(1, 1, 8000) * 0.1
    before = model(wav).audio.detach()
    with torch.no_grad():
        head.align.bias.copy_(torch.tensor([-1.0, 1.0]))
    after = model(wav).audio
    assert (after.detach() - before).abs().max() > 1e-3
    (after * wav).sum().backward()
    assert head.align.weight.grad.abs().sum() > 0
