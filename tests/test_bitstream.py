"""Property tests of the stream format: round trips, exact sizes, and rejection of damaged bytes."""

import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.bitstream import (
    MAGIC,
    Stream,
    StreamHeader,
    decode_packed,
    pack_codes,
    packed_size,
    read_stream,
    unpack_codes,
    write_stream,
)
from codec.errors import CodecError, CorruptStreamError, UnsupportedVersionError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)


@st.composite
def headers(draw, coding=st.sampled_from(["packed", "entropy"])):
    sample_rate = draw(st.integers(1, 1_000_000))
    hop_length = draw(st.integers(1, sample_rate))
    num_frames = draw(st.integers(0, 200))
    # Any length in ((N - 1) * hop, N * hop] gives N frames.
    num_samples = 0
    if num_frames:
        num_samples = draw(st.integers((num_frames - 1) * hop_length + 1, num_frames * hop_length))
    return StreamHeader(
        model_id=draw(st.text(min_size=1, max_size=40)),
        sample_rate=sample_rate,
        hop_length=hop_length,
        num_levels=draw(st.integers(1, 32)),
        codebook_size=draw(st.integers(2, 65536)),
        num_samples=num_samples,
        num_frames=num_frames,
        coding=draw(coding),
    )


def random_codes(header: StreamHeader, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, header.codebook_size, (header.num_levels, header.num_frames))


def encode(header: StreamHeader, seed: int) -> bytes:
    if header.coding == "packed":
        return write_stream(header, codes=random_codes(header, seed))
    return write_stream(header, payload=np.random.default_rng(seed).bytes(seed % 300))


def read_fully(data: bytes) -> Stream:
    stream = read_stream(data)
    if stream.header.coding == "packed":
        decode_packed(stream)
    return stream


def assemble(header_bytes: bytes, payload: bytes) -> bytes:
    """A file with a correct CRC around arbitrary header bytes, to reach the header checks."""
    crc = zlib.crc32(payload, zlib.crc32(header_bytes))
    preamble = MAGIC + struct.pack("<BH", 1, len(header_bytes))
    return preamble + header_bytes + struct.pack("<II", len(payload), crc) + payload


SPEECH = StreamHeader("vqcodec-16k-v1:3f2a9c1b", 16000, 320, 12, 1024, 160000, 500)


def speech_fields(**changes) -> dict:
    fields = dict(SPEECH.__dict__)
    fields.update(changes)
    return fields


def canonical(fields: dict) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


# --- packing ---


@FAST
@given(st.integers(1, 32), st.integers(0, 300), st.integers(1, 16), seeds)
def test_pack_unpack_round_trip(num_levels, num_frames, bits, seed):
    codes = np.random.default_rng(seed).integers(0, 2**bits, (num_levels, num_frames))
    data = pack_codes(codes, bits)
    assert len(data) == packed_size(num_levels * num_frames, bits)
    decoded = unpack_codes(data, num_levels, num_frames, bits)
    assert decoded.dtype == np.int64 and decoded.shape == (num_levels, num_frames)
    np.testing.assert_array_equal(decoded, codes)


def test_packing_is_frame_major_and_msb_first():
    # Frame 0 holds levels (1, 2), frame 1 holds (3, 4): nibbles 1 2 3 4.
    assert pack_codes(np.array([[1, 3], [2, 4]]), 4) == bytes([0x12, 0x34])
    # 101 then five zero padding bits.
    assert pack_codes(np.array([[5]]), 3) == bytes([0b1010_0000])


def test_pack_rejects_bad_codes():
    with pytest.raises(ValueError, match="2-D integer"):
        pack_codes(np.zeros((2, 3), dtype=np.float32), 4)
    with pytest.raises(ValueError, match="2-D integer"):
        pack_codes(np.zeros(3, dtype=np.int64), 4)
    with pytest.raises(ValueError, match="fit 4 bits"):
        pack_codes(np.array([[16]]), 4)
    with pytest.raises(ValueError, match="fit 4 bits"):
        pack_codes(np.array([[-1]]), 4)
    with pytest.raises(ValueError, match="bits"):
        pack_codes(np.array([[0]]), 17)


def test_unpack_rejects_wrong_length_and_padding():
    with pytest.raises(CorruptStreamError, match="expected 2"):
        unpack_codes(b"\x00", 1, 3, 5)
    with pytest.raises(CorruptStreamError, match="padding"):
        unpack_codes(bytes([0b1010_0001]), 1, 1, 3)


# --- stream round trips and sizes ---


@FAST
@given(headers(), seeds)
def test_write_read_round_trip(header, seed):
    data = encode(header, seed)
    stream = read_stream(data)
    assert stream.header == header
    if header.coding == "packed":
        np.testing.assert_array_equal(decode_packed(stream), random_codes(header, seed))
    else:
        assert stream.payload == np.random.default_rng(seed).bytes(seed % 300)


@FAST
@given(headers(coding=st.just("packed")), seeds)
def test_file_size_is_header_overhead_plus_packed_codes(header, seed):
    data = encode(header, seed)
    header_json = canonical(header.__dict__)
    bits = header.num_levels * header.num_frames * header.bits_per_code
    assert len(data) == 4 + 1 + 2 + len(header_json) + 4 + 4 + -(-bits // 8)


def test_ten_seconds_at_6_kbps_is_7500_bytes_of_payload():
    header = SPEECH  # 10 s at 16 kHz, hop 320, 12 levels of 1024 codes
    assert header.bits_per_code == 10
    assert header.frame_rate == 50.0
    assert header.bitrate == 6000.0
    data = write_stream(header, codes=np.zeros((12, 500), dtype=np.int64))
    assert len(read_stream(data).payload) == 7500
    assert len(data) - 7500 < 200


def test_write_validates_codes_against_header():
    with pytest.raises(ValueError, match="shape"):
        write_stream(SPEECH, codes=np.zeros((12, 499), dtype=np.int64))
    with pytest.raises(ValueError, match="1024"):
        write_stream(SPEECH, codes=np.full((12, 500), 1024))
    with pytest.raises(ValueError, match="2-D integer"):
        write_stream(SPEECH, codes=np.zeros((12, 500)))
    with pytest.raises(ValueError, match="packed"):
        write_stream(SPEECH, payload=b"")
    with pytest.raises(ValueError, match="entropy"):
        write_stream(StreamHeader(**speech_fields(coding="entropy")), codes=np.zeros((12, 500), dtype=np.int64))


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"num_frames": 501}, "num_frames"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"hop_length": 0}, "hop_length"),
        ({"num_levels": 33}, "num_levels"),
        ({"codebook_size": 65537}, "codebook_size"),
        ({"model_id": ""}, "model_id"),
        ({"coding": "zip"}, "coding"),
        ({"num_samples": -1}, "num_samples"),
    ],
)
def test_header_rejects_inconsistent_values(changes, error):
    with pytest.raises(ValueError, match=error):
        StreamHeader(**speech_fields(**changes))


def test_header_rejects_mistyped_values_and_accepts_numpy_ints():
    with pytest.raises(TypeError, match="sample_rate"):
        StreamHeader(**speech_fields(sample_rate=16000.0))
    with pytest.raises(TypeError, match="num_levels"):
        StreamHeader(**speech_fields(num_levels=True))
    header = StreamHeader(**speech_fields(num_samples=np.int64(160000)))
    assert type(header.num_samples) is int


# --- rejection of damaged bytes ---


@FAST
@given(headers(), seeds, st.data())
def test_any_single_byte_change_is_rejected(header, seed, data):
    original = encode(header, seed)
    index = data.draw(st.integers(0, len(original) - 1))
    corrupted = bytearray(original)
    corrupted[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CorruptStreamError):
        read_fully(bytes(corrupted))


@FAST
@given(headers(), seeds, st.data())
def test_any_truncation_or_extension_is_rejected(header, seed, data):
    original = encode(header, seed)
    with pytest.raises(CorruptStreamError):
        read_fully(original[: data.draw(st.integers(0, len(original) - 1))])
    with pytest.raises(CorruptStreamError, match="trailing"):
        read_fully(original + data.draw(st.binary(min_size=1, max_size=8)))


def test_every_byte_and_every_prefix_of_a_small_file_is_checked():
    header = StreamHeader("m", 8, 3, 2, 5, 7, 3)
    original = write_stream(header, codes=np.array([[0, 4, 2], [1, 3, 4]]))
    for index in range(len(original)):
        for flip in (0x01, 0x80, 0xFF):
            corrupted = bytearray(original)
            corrupted[index] ^= flip
            with pytest.raises(CorruptStreamError):
                read_fully(bytes(corrupted))
    for length in range(len(original)):
        with pytest.raises(CorruptStreamError):
            read_fully(original[:length])


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_are_rejected(data):
    with pytest.raises(CodecError):
        read_fully(data)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_after_a_valid_preamble_are_rejected(data):
    with pytest.raises(CodecError):
        read_fully(MAGIC + b"\x01" + data)


@FAST
@given(headers(), seeds, st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=8))
def test_scattered_damage_raises_only_codec_errors(header, seed, edits):
    corrupted = bytearray(encode(header, seed))
    for index, value in edits:
        corrupted[index % len(corrupted)] = value
    try:
        read_fully(bytes(corrupted))
    except CodecError:
        pass


@pytest.mark.parametrize(
    "data, error_type, message",
    [
        (b"", CorruptStreamError, "empty input"),
        (b"RIFF\x00\x00\x00\x00WAVE", CorruptStreamError, "expected magic b'VQAC'"),
        (b"VQA", CorruptStreamError, "truncated preamble"),
        (MAGIC + b"\x02\x00\x00", UnsupportedVersionError, "version 2"),
        (MAGIC + b"\x01\x10\x00{}", CorruptStreamError, "truncated header: expected 31 bytes"),
    ],
)
def test_damaged_preamble_messages(data, error_type, message):
    with pytest.raises(error_type, match=message):
        read_stream(data)


def test_truncated_payload_and_crc_messages():
    original = write_stream(SPEECH, codes=np.zeros((12, 500), dtype=np.int64))
    with pytest.raises(CorruptStreamError, match="truncated payload: expected 7500 bytes, got 7499"):
        read_stream(original[:-1])
    corrupted = bytearray(original)
    corrupted[-1] ^= 1
    with pytest.raises(CorruptStreamError, match="CRC mismatch"):
        read_stream(bytes(corrupted))


@pytest.mark.parametrize(
    "header_bytes, message",
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"{nope", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"[" * 60000, "not valid JSON"),
        (canonical({k: v for k, v in speech_fields().items() if k != "coding"}), "missing fields: coding"),
        (canonical(speech_fields(extra=1)), "unknown fields: extra"),
        (canonical(speech_fields(sample_rate="16000")), "sample_rate must be an int"),
        (canonical(speech_fields(sample_rate=16000.0)), "sample_rate must be an int"),
        (canonical(speech_fields(num_frames=7)), "num_frames is 7"),
        (canonical(speech_fields(sample_rate=-5)), "sample_rate must be in"),
        (canonical(speech_fields(num_samples=10**30)), "num_samples must be in"),
        (json.dumps(speech_fields()).encode(), "not canonical"),
        (canonical(speech_fields()) + b" ", "not canonical"),
    ],
)
def test_inconsistent_headers_with_valid_crc_are_rejected(header_bytes, message):
    with pytest.raises(CorruptStreamError, match=message):
        read_stream(assemble(header_bytes, bytes(7500)))


def test_payload_length_must_match_header():
    with pytest.raises(CorruptStreamError, match="header implies 7500"):
        read_stream(assemble(canonical(speech_fields()), bytes(7499)))


def test_code_beyond_codebook_is_rejected():
    # 1000 entries need 10 bits, so the packed value 1023 is representable but invalid.
    header = StreamHeader("m", 16000, 320, 1, 1000, 320, 1)
    stream = read_stream(assemble(canonical(header.__dict__), pack_codes(np.array([[1023]]), 10)))
    with pytest.raises(CorruptStreamError, match="code 1023 is out of range"):
        decode_packed(stream)
