"""A pitch side stream: the input's f0, one value per code frame, coded in a few bits a frame.

The harmonic decoder head keeps its pulses in phase with the input only if its f0 is within a
fraction of a percent of the input's (see README, "SI-SDR: where Codec2's lead comes from"); the
codes do not carry f0 that finely. This module measures f0 at the encoder (`codec.pitch.estimate_f0`),
keeps one value per code frame rounded to STEP in natural-log f0 (about 1%), and codes it:

    per code frame, in order, MSB-first bits:
        1 bit      voiced
        if voiced and the previous frame was voiced:
                   the change of the f0 index, signed Exp-Golomb (order 0)
        if voiced and the previous frame was not (or this is the first frame):
                   the f0 index, INDEX_BITS bits
    the last byte padded with zero bits

The reader accepts exactly what the writer produces (an index outside the range, a truncated
stream, padding that is not zero or trailing bytes raise CorruptStreamError), like codec.bitstream.
`decoder_pitch` turns a track into what `Decoder.head_output(pitch=...)` takes: log f0 at the
decoder's frame rate, interpolated between voiced code frames, and a mask of voiced frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from codec.errors import CorruptStreamError
from codec.pitch import estimate_f0

LOW_HZ, HIGH_HZ = 60.0, 400.0  # the tracker's search range, as the decoder's pitch head's
STEP = 0.01  # natural-log f0 per index step: 1%
NUM_INDICES = int(math.ceil(math.log(HIGH_HZ / LOW_HZ) / STEP)) + 1  # 191
INDEX_BITS = max(1, math.ceil(math.log2(NUM_INDICES)))  # 8


@dataclass(frozen=True)
class PitchTrack:
    voiced: np.ndarray  # [N] bool, one per code frame
    index: np.ndarray  # [N] int: log f0 = log(LOW_HZ) + index * STEP where voiced, 0 elsewhere

    def __post_init__(self) -> None:
        if self.voiced.shape != self.index.shape or self.voiced.ndim != 1:
            raise ValueError("voiced and index must be [N] arrays of the same length")
        if np.any((self.index < 0) | (self.index >= NUM_INDICES)) or np.any(self.index[~self.voiced] != 0):
            raise ValueError(f"index must lie in [0, {NUM_INDICES}) on voiced frames and be 0 elsewhere")

    def f0_hz(self) -> np.ndarray:
        """[N] f0 in Hz, NaN where unvoiced."""
        f0 = LOW_HZ * np.exp(self.index * STEP)
        return np.where(self.voiced, f0, np.nan)


def analyse(wav: torch.Tensor, sample_rate: int, hop_length: int, n_fft: int, upsample: int) -> PitchTrack:
    """wav [T] (T a multiple of hop_length) -> the track at one value per code frame of
    `hop_length` samples: the tracker runs at the decoder's frames (hop_length / upsample) and
    each code frame keeps its first decoder frame."""
    frame_hop = hop_length // upsample
    track = estimate_f0(wav.double()[None], n_fft, frame_hop, LOW_HZ / sample_rate, HIGH_HZ / sample_rate)
    voiced = track.voiced[0, ::upsample].numpy()
    hz = track.f0[0, ::upsample].numpy() * sample_rate
    index = np.clip(np.round(np.log(np.maximum(hz, 1e-6) / LOW_HZ) / STEP), 0, NUM_INDICES - 1).astype(np.int64)
    return PitchTrack(voiced, np.where(voiced, index, 0))


class _BitWriter:
    def __init__(self):
        self.bits: list[int] = []

    def write(self, value: int, width: int) -> None:
        self.bits.extend((value >> (width - 1 - i)) & 1 for i in range(width))

    def exp_golomb(self, value: int) -> None:
        """Signed Exp-Golomb, order 0: 0, 1, -1, 2, -2, ... -> codes 1, 010, 011, 00100, ..."""
        mapped = 2 * value - 1 if value > 0 else -2 * value
        width = (mapped + 1).bit_length()
        self.write(0, width - 1)
        self.write(mapped + 1, width)

    def getvalue(self) -> bytes:
        padded = self.bits + [0] * (-len(self.bits) % 8)
        return np.packbits(np.array(padded, dtype=np.uint8)).tobytes() if padded else b""


class _BitReader:
    def __init__(self, data: bytes):
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        self.position = 0

    def read(self, width: int) -> int:
        if self.position + width > len(self.bits):
            raise CorruptStreamError("pitch stream is truncated")
        value = 0
        for bit in self.bits[self.position : self.position + width]:
            value = (value << 1) | int(bit)
        self.position += width
        return value

    def exp_golomb(self) -> int:
        zeros = 0
        while self.read(1) == 0:
            zeros += 1
            if zeros > 16:  # no index change needs more than 9 bits
                raise CorruptStreamError("pitch stream holds an over-long code")
        mapped = ((1 << zeros) | self.read(zeros)) - 1
        return (mapped + 1) // 2 if mapped % 2 else -(mapped // 2)


def encode_track(track: PitchTrack) -> bytes:
    writer = _BitWriter()
    previous = None
    for voiced, index in zip(track.voiced.tolist(), track.index.tolist()):
        writer.write(int(voiced), 1)
        if voiced:
            if previous is None:
                writer.write(index, INDEX_BITS)
            else:
                writer.exp_golomb(index - previous)
            previous = index
        else:
            previous = None
    return writer.getvalue()


def decode_track(data: bytes, num_frames: int) -> PitchTrack:
    if num_frames > 8 * len(data):  # every frame spends at least its voicing bit; checked before allocating
        raise CorruptStreamError(f"pitch stream of {len(data)} bytes cannot hold {num_frames} frames")
    reader = _BitReader(data)
    voiced = np.zeros(num_frames, dtype=bool)
    index = np.zeros(num_frames, dtype=np.int64)
    previous = None
    for n in range(num_frames):
        if reader.read(1):
            value = reader.read(INDEX_BITS) if previous is None else previous + reader.exp_golomb()
            if not 0 <= value < NUM_INDICES:
                raise CorruptStreamError(f"pitch stream holds an f0 index out of range ({value})")
            voiced[n], index[n], previous = True, value, value
        else:
            previous = None
    rest = reader.bits[reader.position :]
    if len(rest) >= 8 or rest.any():
        raise CorruptStreamError("pitch stream has trailing data")
    return PitchTrack(voiced, index)


def decoder_pitch(track: PitchTrack, sample_rate: int, upsample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The track as `Decoder.head_output(pitch=...)` takes it: (log f0 [1, N * upsample] in
    cycles per sample, mask [1, N * upsample]). A voiced code frame covers its `upsample` decoder
    frames; within it log f0 moves linearly towards the next frame's value when that is voiced."""
    log_f0 = math.log(LOW_HZ / sample_rate) + track.index.astype(np.float64) * STEP
    following = np.append(log_f0[1:], log_f0[-1:]) if len(log_f0) else log_f0
    next_voiced = np.append(track.voiced[1:], False)
    following = np.where(next_voiced, following, log_f0)
    weight = np.arange(upsample) / upsample
    frames = log_f0[:, None] * (1 - weight) + following[:, None] * weight  # [N, upsample]
    mask = np.repeat(track.voiced, upsample)
    return torch.from_numpy(frames.reshape(1, -1)), torch.from_numpy(mask[None])


def analyse_source(source, config, window_frames: int = 500) -> PitchTrack:
    """The track of a whole `codec.audio.AudioSource` at the model's rate, read in windows of
    `window_frames` code frames (bounded memory) with enough context either side for the
    tracker. The voicing test's loudness threshold is relative to the loudest frame of each
    window (so inputs up to a window long get exactly `analyse` of the whole)."""
    hop, upsample, n_fft = config.hop_length, config.decoder.upsample, config.decoder.n_fft
    total = -(-source.num_samples // hop)
    context = hop * -(-n_fft // hop)  # whole code frames covering the tracker's reach
    voiced, index = [], []
    for first in range(0, total, window_frames):
        last = min(first + window_frames, total)
        wav = source.read(first * hop - context, last * hop + context)[0]
        track = analyse(wav, config.sample_rate, hop, n_fft, upsample)
        keep = slice(context // hop, context // hop + last - first)
        voiced.append(track.voiced[keep])
        index.append(track.index[keep])
    if not voiced:
        return PitchTrack(np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64))
    return PitchTrack(np.concatenate(voiced), np.concatenate(index))
