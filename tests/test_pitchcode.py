"""codec.pitchcode: the pitch side stream's analysis, bit format and decoder track."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from codec.errors import CorruptStreamError
from codec.pitchcode import (
    INDEX_BITS,
    LOW_HZ,
    NUM_INDICES,
    STEP,
    PitchTrack,
    analyse,
    decode_track,
    decoder_pitch,
    encode_track,
)


def random_track(frames: int, seed: int) -> PitchTrack:
    rng = np.random.default_rng(seed)
    voiced = rng.random(frames) < 0.6
    index = np.clip(np.cumsum(rng.integers(-3, 4, frames)) + 100, 0, NUM_INDICES - 1)
    index[rng.random(frames) < 0.05] = rng.integers(0, NUM_INDICES)  # jumps
    return PitchTrack(voiced, np.where(voiced, index, 0))


@pytest.mark.parametrize("frames, seed", [(0, 0), (1, 1), (7, 2), (500, 3)])
def test_round_trip(frames, seed):
    track = random_track(frames, seed)
    decoded = decode_track(encode_track(track), frames)
    assert np.array_equal(decoded.voiced, track.voiced) and np.array_equal(decoded.index, track.index)


def test_a_steady_voiced_run_costs_a_bit_a_frame_after_its_first():
    track = PitchTrack(np.ones(100, dtype=bool), np.full(100, 120))
    # 1 voicing bit each, the first index raw, then a 1-bit "no change" code each
    assert len(encode_track(track)) == math.ceil((100 + INDEX_BITS + 99) / 8)


def test_corrupt_streams_are_rejected():
    track = random_track(200, 4)
    data = encode_track(track)
    with pytest.raises(CorruptStreamError, match="truncated"):
        decode_track(data[:-3], 200)
    with pytest.raises(CorruptStreamError, match="trailing"):
        decode_track(data + b"\x00", 200)
    out_of_range = PitchTrack(np.array([True]), np.array([NUM_INDICES - 1]))
    bits = encode_track(out_of_range)
    raised = (bits[0] | 0x7F).to_bytes(1, "big") + bits[1:]  # index bits all ones: 255 > 190
    with pytest.raises(CorruptStreamError, match="out of range"):
        decode_track(raised, 1)
    for flipped in range(len(data)):  # any single changed byte: an error or a different track, never a crash
        corrupt = bytearray(data)
        corrupt[flipped] ^= 0x5A
        try:
            decode_track(bytes(corrupt), 200)
        except CorruptStreamError:
            pass


def test_analyse_finds_a_tone_to_within_half_a_step():
    sample_rate, hop, upsample = 16000, 320, 2
    t = torch.arange(sample_rate) / sample_rate
    track = analyse(0.3 * torch.sin(2 * torch.pi * 203.0 * t), sample_rate, hop, 640, upsample)
    assert len(track.voiced) == sample_rate // hop
    middle = slice(3, -3)
    assert track.voiced[middle].all()
    assert np.allclose(track.f0_hz()[middle], 203.0, rtol=STEP / 2 + 1e-3)
    silent = analyse(torch.zeros(sample_rate), sample_rate, hop, 640, upsample)
    assert not silent.voiced.any()


def test_decoder_pitch_interpolates_within_voiced_runs_and_masks_the_rest():
    track = PitchTrack(np.array([True, True, False, True]), np.array([10, 20, 0, 30]))
    log_f0, mask = decoder_pitch(track, 16000, 2)
    assert log_f0.shape == mask.shape == (1, 8)
    assert mask.tolist() == [[True, True, True, True, False, False, True, True]]
    base = math.log(LOW_HZ / 16000)
    expected = [base + 10 * STEP, base + 15 * STEP, base + 20 * STEP, base + 20 * STEP]
    assert np.allclose(log_f0[0, :4].numpy(), expected)
    assert np.allclose(log_f0[0, 6:].numpy(), base + 30 * STEP)


def voiced_tiny_codec():
    from conftest import make_tiny_codec

    codec = make_tiny_codec()
    with torch.no_grad():
        codec.model.decoder.head.pitch.net[-1].bias.copy_(torch.tensor([0.0, 5.0]))  # voiced everywhere
    return codec


def vowel(seconds: float, hz: float = 180.0) -> torch.Tensor:
    t = torch.arange(int(seconds * 16000)) / 16000
    return (0.3 * torch.sin(2 * torch.pi * hz * t) + 0.1 * torch.sin(2 * torch.pi * 2 * hz * t))[None]


def test_the_api_sends_the_pitch_through_the_file_and_the_decoder_uses_it():
    codec = voiced_tiny_codec()
    wav = vowel(1.3)
    plain = codec.encode(wav, 16000)
    sent = codec.encode(wav, 16000, pitch=True)
    assert torch.equal(plain.codes, sent.codes) and sent.pitch is not None and sent.pitch[0].voiced[3:-3].all()
    data = codec.to_bytes(sent)
    assert len(data) == len(codec.to_bytes(plain)) + 1 + len(encode_track(sent.pitch[0]))
    back = codec.from_bytes(data)
    assert np.array_equal(back.pitch[0].index, sent.pitch[0].index)
    with_pitch, without = codec.decode(back)[0], codec.decode(plain)[0]
    assert with_pitch.shape == without.shape == (1, wav.shape[-1])
    assert (with_pitch - without).abs().max() > 1e-3
    assert torch.allclose(torch.cat(list(codec.decode_iter(back)), dim=-1), with_pitch)


def test_windowed_pitch_analysis_and_decoding_equal_whole_signal():
    codec = voiced_tiny_codec()
    wav = vowel(3.1)
    whole = codec.encode(wav, 16000, pitch=True)
    codec.window_frames = 37
    windowed = codec.encode(wav, 16000, pitch=True)
    assert np.array_equal(whole.pitch[0].voiced, windowed.pitch[0].voiced)
    assert np.array_equal(whole.pitch[0].index, windowed.pitch[0].index)
    small_windows = codec.decode(windowed)
    codec.window_frames = 500
    assert (small_windows - codec.decode(whole)).abs().max() < 1e-3


def test_pitch_needs_matching_frames():
    codec = voiced_tiny_codec()
    encoded = codec.encode(vowel(0.5), 16000, pitch=True)
    encoded.pitch = [PitchTrack(np.zeros(3, dtype=bool), np.zeros(3, dtype=np.int64))]
    with pytest.raises(CorruptStreamError, match="pitch"):
        codec.decode(encoded)


def test_empty_streams_decode_to_empty_audio_and_mismatched_tracks_are_not_written():
    from codec import bitstream

    codec = voiced_tiny_codec()
    for coding, pitch in (("packed", None), ("packed+pitch", b"")):  # a stream of 0 samples, as a file may hold
        header = bitstream.StreamHeader(
            codec.model_id, 16000, codec.config.hop_length, 2, codec.config.quantizer.codebook_size, 0, 0, coding=coding
        )
        data = bitstream.write_stream(header, codes=np.zeros((2, 0), dtype=np.int64), pitch=pitch)
        assert codec.decode(codec.from_bytes(data)).shape == (1, 1, 0)
    encoded = codec.encode(vowel(0.5), 16000, pitch=True)
    encoded.codes = encoded.codes[..., :-1]  # trimmed codes, the track left as it was
    encoded.num_samples -= 320
    with pytest.raises(CorruptStreamError, match="pitch"):
        codec.to_bytes(encoded)
