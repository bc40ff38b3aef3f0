"""codec.pitchcode: the pitch side stream's analysis, bit format and decoder track."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from codec.errors import CorruptStreamError
from codec.pitchcode import (INDEX_BITS, LOW_HZ, NUM_INDICES, STEP, PitchTrack, analyse, decode_track,
                             decoder_pitch, encode_track)


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
