"""The codec library: shapes, lengths, bitrates, windowing, checkpoints and input conversion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import harmonic_signal, make_tiny_codec

from codec import Codec, CodecConfig, build_model
from codec.audio import FileSource, TensorSource
from codec.checkpoint import CheckpointError
from codec.errors import CorruptStreamError, InvalidAudioError
from codec.windowing import decode_windows, encode_source

SPEECH = Path(__file__).parent / "data" / "arctic_a0009.wav"


def test_shapes_and_lengths(tiny_codec: Codec):
    wav = torch.randn(3, 2, 16000 + 123) * 0.1  # batch of stereo clips, not a whole frame
    encoded = tiny_codec.encode(wav, sample_rate=16000)
    assert encoded.codes.shape == (3, 4, 51)
    assert encoded.codes.dtype == torch.int64
    audio = tiny_codec.decode(encoded)
    assert audio.shape == (3, 1, 16123)


def test_bitrate_selects_levels(tiny_codec: Codec):
    config = tiny_codec.config  # 64-entry codebooks: 6 bits x 50 frames/s = 0.3 kbps a level
    wav = torch.from_numpy(harmonic_signal(1.0, 16000, 1))
    assert tiny_codec.encode(wav, 16000, bitrate=0.6).num_levels == 2
    assert tiny_codec.encode(wav, 16000, bitrate=100).num_levels == config.quantizer.num_levels
    with pytest.raises(InvalidAudioError, match="below the lowest"):
        tiny_codec.encode(wav, 16000, bitrate=0.1)


def test_default_config_bitrates():
    config = CodecConfig()
    assert config.frame_rate == 50
    assert config.bitrate(1) == 500 and config.bitrate(12) == 6000
    assert config.levels_for_bitrate(3.0) == 6 and config.levels_for_bitrate(1.5) == 3


def test_fewer_levels_are_a_prefix(tiny_codec: Codec):
    wav = torch.from_numpy(harmonic_signal(1.0, 16000, 2))
    full = tiny_codec.encode(wav, 16000).codes
    two = tiny_codec.encode(wav, 16000, bitrate=0.6).codes
    assert torch.equal(full[:, :2], two)


def test_windowed_equals_whole():
    model = make_tiny_codec().model
    wav = torch.from_numpy(harmonic_signal(7.3, 16000, 3))[None]
    whole_codes = model.encode(wav[None])[0]
    source = TensorSource(wav, 16000, 16000)
    windowed_codes = encode_source(model, source, 4, window_frames=37)
    assert torch.equal(whole_codes, windowed_codes)

    whole_audio = model.decode(whole_codes[None])[0][:, : wav.shape[-1]]
    pieces = list(decode_windows(model, whole_codes, wav.shape[-1], window_frames=29))
    windowed_audio = torch.cat(pieces, dim=-1)
    assert windowed_audio.shape == whole_audio.shape
    # The harmonic head's running phase sums float32 rounding of f0 over the whole signal and
    # multiplies it by the harmonic number, so it drifts a little; a window that restarted the
    # running phase instead of carrying it would differ by about the signal itself.
    assert (windowed_audio - whole_audio).abs().max() < 1e-3


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_file_source_matches_whole_file_resampling(tmp_path, rate):
    audio = np.stack([harmonic_signal(2.3, rate, 4), harmonic_signal(2.3, rate, 5)], axis=1) * 0.5
    sf.write(tmp_path / "x.wav", audio, rate, subtype="FLOAT")
    whole = TensorSource(torch.from_numpy(audio.T.copy()), rate, 16000)
    source = FileSource(tmp_path / "x.wav", 16000)
    assert source.num_samples == whole.num_samples
    for start, stop in [(0, 320), (3200, 9600), (30000, whole.num_samples + 500), (-640, 640)]:
        assert torch.allclose(source.read(start, stop), whole.read(start, stop), atol=1e-4), (start, stop)


def test_checkpoint_round_trip_gives_identical_outputs(tiny_codec: Codec, tmp_path):
    path = tmp_path / "model.safetensors"
    tiny_codec.save(path)
    loaded = Codec.load(path)
    wav = torch.from_numpy(harmonic_signal(1.2, 16000, 6))
    a, b = tiny_codec.encode(wav, 16000), loaded.encode(wav, 16000)
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(tiny_codec.model.decode(a.codes), loaded.model.decode(a.codes))
    assert loaded.model_id.startswith("vqcodec-tiny:")


def test_model_id_names_the_weights_not_the_file(tiny_codec: Codec, tmp_path):
    # Saved by separate processes (safetensors orders its metadata differently in each), the
    # same weights keep their id; changed weights get a new one.
    script = "import sys; from codec import Codec; Codec.load(sys.argv[1]).save(sys.argv[2], half=True)"
    source = tmp_path / "source.safetensors"
    tiny_codec.save(source)
    ids = set()
    for index in range(3):
        copy = tmp_path / f"copy{index}.safetensors"
        subprocess.run([sys.executable, "-c", script, str(source), str(copy)], check=True)
        ids.add(Codec.load(copy).model_id)
    assert len(ids) == 1
    changed = Codec.load(source)
    with torch.no_grad():
        changed.model.decoder.head.proj.bias[0] += 1.0
    changed.save(tmp_path / "changed.safetensors", half=True)
    assert Codec.load(tmp_path / "changed.safetensors").model_id not in ids


def test_checkpoint_load_is_strict(tiny_codec: Codec, tmp_path):
    path = tmp_path / "model.safetensors"
    tiny_codec.save(path)
    with pytest.raises(CheckpointError, match="not a valid checkpoint"):
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(path.read_bytes()[:1000])
        Codec.load(bad)
    other = build_model(CodecConfig())  # a different architecture under a tiny config
    from codec.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "mismatch.safetensors", "codec", tiny_codec.config.to_dict(), other.state_dict())
    with pytest.raises(CheckpointError, match="does not match|has shape"):
        Codec.load(tmp_path / "mismatch.safetensors")
    with pytest.raises(CheckpointError, match="cannot read"):
        Codec.load(tmp_path / "missing.safetensors")


def test_half_precision_checkpoint_is_smaller_and_close(tiny_codec: Codec, tmp_path):
    tiny_codec.save(tmp_path / "full.safetensors")
    tiny_codec.save(tmp_path / "half.safetensors", half=True)
    full, half = (tmp_path / "full.safetensors").stat().st_size, (tmp_path / "half.safetensors").stat().st_size
    assert half < 0.6 * full
    loaded = Codec.load(tmp_path / "half.safetensors")
    codes = tiny_codec.encode(torch.from_numpy(harmonic_signal(1.0, 16000, 7)), 16000).codes
    a, b = tiny_codec.model.decode(codes), loaded.model.decode(codes)
    assert (a - b).abs().max() < 0.05 * a.abs().max() + 1e-3


def test_bytes_round_trip_and_size(tiny_codec: Codec):
    wav, rate = sf.read(SPEECH, dtype="float32")
    encoded = tiny_codec.encode(wav, rate, bitrate=0.9)
    data = tiny_codec.to_bytes(encoded)
    decoded = tiny_codec.from_bytes(data)
    assert torch.equal(decoded.codes, encoded.codes)
    payload_bits = encoded.codes.numel() * 6
    assert len(data) - payload_bits / 8 < 200  # only the header on top of the bitrate


def test_stream_from_another_model_is_rejected(tiny_codec: Codec):
    encoded = tiny_codec.encode(torch.zeros(1600), 16000)
    other = Codec(tiny_codec.model, "vqcodec-tiny:another")
    with pytest.raises(CorruptStreamError, match="written by model"):
        other.from_bytes(tiny_codec.to_bytes(encoded))


@pytest.mark.parametrize("length", [1, 100, 320, 16000])
def test_silence_and_short_clips(tiny_codec: Codec, length):
    encoded = tiny_codec.encode(torch.zeros(length), 16000)
    audio = tiny_codec.decode(tiny_codec.from_bytes(tiny_codec.to_bytes(encoded)))
    assert audio.shape == (1, 1, length)
    assert torch.isfinite(audio).all()


@pytest.mark.parametrize(
    "wav, message",
    [
        (torch.zeros(0), "empty"),
        (torch.tensor([0.0, float("nan"), 0.0]), "NaN"),
        (torch.tensor([0.0, float("inf")]), "NaN or infinite"),
        (torch.zeros(2, 3, 4, 5), "must be"),
    ],
)
def test_bad_audio_is_rejected(tiny_codec: Codec, wav, message):
    with pytest.raises(InvalidAudioError, match=message):
        tiny_codec.encode(wav, 16000)


def test_bad_codes_are_rejected(tiny_codec: Codec):
    encoded = tiny_codec.encode(torch.zeros(3200), 16000)
    encoded.codes[0, 0, 0] = 64
    with pytest.raises(CorruptStreamError, match="must be in"):
        tiny_codec.decode(encoded)
