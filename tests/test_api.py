"""The Codec's batch entry points (items of different lengths), its one code check, and the
bytes API in two steps (parse once, then decode)."""

from __future__ import annotations

import pytest
import torch
from conftest import harmonic_signal

from codec import Codec
from codec.audio import TensorSource
from codec.errors import CodecError, CorruptStreamError


def clip(seconds: float, seed: int) -> torch.Tensor:
    return torch.from_numpy(harmonic_signal(seconds, 16000, seed))[None]  # [1, T]


@pytest.fixture(scope="module")
def windowed(tiny_codec: Codec) -> Codec:
    """The tiny codec with a window of 20 frames, so that a clip of a second takes the windowed path."""
    codec = Codec(tiny_codec.model, tiny_codec.model_id)
    codec.window_frames = 20
    return codec


def test_encode_batch_gives_each_item_its_own_length(tiny_codec: Codec):
    wavs = [clip(0.5, 0), clip(0.31, 1), clip(0.5, 2)]
    codes = tiny_codec.encode_batch(wavs, num_levels=2)
    assert [c.shape for c in codes] == [(2, 25), (2, 16), (2, 25)]
    assert all(c.dtype == torch.int64 for c in codes)
    # A batch of one length is what Codec.encode runs.
    same = tiny_codec.encode(torch.stack([wavs[0], wavs[2]]), 16000, bitrate=tiny_codec.bitrates()[1])
    assert torch.equal(same.codes, torch.stack([codes[0], codes[2]]))


def test_long_items_and_sources_are_encoded_window_by_window(windowed: Codec):
    wav = clip(1.0, 3)
    source = TensorSource(wav, 16000, 16000)
    short, long, from_source = windowed.encode_batch([clip(0.2, 4), wav, source])
    assert short.shape == (4, 10)
    assert torch.equal(long, from_source)
    assert torch.equal(long, windowed.encode_source(source).codes[0])


def test_decode_batch_matches_decoding_each_item(windowed: Codec):
    codes = windowed.encode_batch([clip(0.3, 5), clip(0.35, 6), clip(1.0, 7)], num_levels=3)
    codes[1] = codes[1][:2]  # fewer levels: decoded in a model call of its own
    lengths = [4800, 5555, 16000]
    wavs = windowed.decode_batch(codes, lengths)
    assert [w.shape for w in wavs] == [(1, n) for n in lengths]
    for item, length, wav in zip(codes, lengths, wavs):
        alone = torch.cat(list(windowed._decode_windows(item, length, None)), dim=-1)
        assert (wav - alone).abs().max() < 1e-4
    assert torch.equal(windowed.decode_batch([torch.zeros(2, 0, dtype=torch.long)], [0])[0], torch.zeros(1, 0))


def test_decode_batch_takes_a_pitch_stream(tiny_codec: Codec):
    wav = clip(0.5, 8)
    codes = tiny_codec.encode_batch([wav])
    track = tiny_codec.pitch_track(wav)
    with_pitch, without = tiny_codec.decode_batch(codes * 2, [8000, 8000], [track, None])
    assert with_pitch.shape == without.shape == (1, 8000)
    encoded = tiny_codec.encode(wav, 16000, pitch=True)
    assert torch.equal(tiny_codec.decode(encoded)[0], with_pitch)


@pytest.mark.parametrize(
    "codes, num_samples, message",
    [
        (torch.zeros(5, 3, dtype=torch.long), 960, "1 to 4 rows"),
        (torch.full((2, 3), 64), 960, r"\[0, 64\)"),
        (torch.zeros(2, 3, dtype=torch.long), 5000, "num_samples 5000 needs 16 frames"),
        (torch.zeros(2, 3), 960, "integers"),
        (torch.zeros(3, dtype=torch.long), 960, r"\[K, N\]"),
    ],
)
def test_one_code_check(tiny_codec: Codec, codes, num_samples, message):
    with pytest.raises(CorruptStreamError, match=message):
        tiny_codec.check_codes(codes, num_samples)
    with pytest.raises(CorruptStreamError, match=message):
        tiny_codec.decode_batch([torch.zeros(1, 3, dtype=torch.long), codes], [960, num_samples])


def test_a_stream_is_parsed_once_then_decoded(tiny_codec: Codec):
    encoded = tiny_codec.encode(clip(0.4, 9), 16000, pitch=True)
    data = tiny_codec.to_bytes(encoded)
    stream = tiny_codec.read_stream(data)
    assert stream.header.num_frames == 20 and stream.header.has_pitch
    decoded = tiny_codec.from_stream(stream)
    assert torch.equal(decoded.codes, encoded.codes)
    assert (decoded.pitch[0].index == encoded.pitch[0].index).all()


def test_a_prior_for_another_codec_is_refused(tiny_codec: Codec):
    class Stranger:
        def mismatch(self, codec):
            return f"not a prior for {codec.model_id}"

    with pytest.raises(CodecError, match="not a prior for vqcodec-tiny"):
        tiny_codec.check_prior(Stranger())
