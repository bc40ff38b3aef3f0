"""Property tests of the stream format: round trips, the exact byte layout, and rejection of damaged bytes."""

import struct
import zlib

import numpy as np
import pytest
from conftest import FAST, seeds
from hypothesis import given
from hypothesis import strategies as st

from codec.bitstream import (
    MAGIC,
    MAX_NUM_SAMPLES,
    MAX_SAMPLE_RATE,
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

model_ids = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64)


@st.composite
def headers(draw, coding=st.sampled_from(["packed", "entropy", "packed+pitch", "entropy+pitch"])):
    sample_rate = draw(st.integers(1, 1_000_000))
    hop_length = draw(st.integers(1, sample_rate))
    num_frames = draw(st.integers(0, 200))
    # Any length in ((N - 1) * hop, N * hop] gives N frames.
    num_samples = 0
    if num_frames:
        num_samples = draw(st.integers((num_frames - 1) * hop_length + 1, num_frames * hop_length))
    return StreamHeader(
        model_id=draw(model_ids),
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


def random_pitch(header: StreamHeader, seed: int) -> bytes | None:
    return np.random.default_rng(seed + 1).bytes(seed % 150) if header.has_pitch else None


def encode(header: StreamHeader, seed: int) -> bytes:
    pitch = random_pitch(header, seed)
    if header.codes_coding == "packed":
        return write_stream(header, codes=random_codes(header, seed), pitch=pitch)
    return write_stream(header, payload=np.random.default_rng(seed).bytes(seed % 300), pitch=pitch)


def read_fully(data: bytes) -> Stream:
    stream = read_stream(data)
    if stream.header.codes_coding == "packed":
        decode_packed(stream)
    return stream


# The documented layout, written independently of codec.bitstream so the tests pin it down.


def leb128(value: int) -> bytes:
    """Unsigned LEB128 in its shortest form."""
    groups = [(value >> shift) & 0x7F for shift in range(0, max(value.bit_length(), 1), 7)]
    return bytes([group | 0x80 for group in groups[:-1]] + [groups[-1]])


def padded(value: int) -> bytes:
    """A valid but not shortest LEB128 form of `value`: one more byte that adds nothing."""
    short = leb128(value)
    return short[:-1] + bytes([short[-1] | 0x80, 0x00])


def raw_fields(header: StreamHeader, payload_length: int) -> dict[str, bytes]:
    """The fields between the version byte and the CRC, in file order."""
    model_id = header.model_id.encode("ascii")
    return {
        "coding": bytes([["packed", "entropy", "packed+pitch", "entropy+pitch"].index(header.coding)]),
        "model_id": bytes([len(model_id)]) + model_id,
        "sample_rate": leb128(header.sample_rate),
        "hop_length": leb128(header.hop_length),
        "num_levels": leb128(header.num_levels),
        "codebook_size": leb128(header.codebook_size),
        "num_samples": leb128(header.num_samples),
        "payload_length": leb128(payload_length),
    }


SPEECH = StreamHeader("vqcodec-16k:49b2ceea780d", 16000, 320, 12, 1024, 160000, 500)


def assemble(payload: bytes, header: StreamHeader = SPEECH, version: int = 1, **replaced: bytes) -> bytes:
    """A file in the documented layout with a correct CRC around any field bytes, to reach the header checks."""
    fields = raw_fields(header, len(payload)) | replaced
    before_crc = MAGIC + bytes([version]) + b"".join(fields.values())
    return before_crc + struct.pack("<I", zlib.crc32(before_crc + payload)) + payload


def speech_fields(**changes) -> dict:
    fields = dict(SPEECH.__dict__)
    fields.update(changes)
    return fields


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


# --- stream round trips, layout and sizes ---


@FAST
@given(headers(), seeds)
def test_write_read_round_trip(header, seed):
    data = encode(header, seed)
    stream = read_stream(data)
    assert stream.header == header
    assert stream.pitch == random_pitch(header, seed)
    if header.codes_coding == "packed":
        np.testing.assert_array_equal(decode_packed(stream), random_codes(header, seed))
    else:
        assert stream.payload == np.random.default_rng(seed).bytes(seed % 300)


@FAST
@given(headers(), seeds)
def test_file_is_the_documented_layout(header, seed):
    data = encode(header, seed)
    stream = read_stream(data)
    payload = stream.payload
    if header.has_pitch:  # the pitch stream's length, the pitch stream, then the codes
        payload = leb128(len(stream.pitch)) + stream.pitch + payload
    assert data == assemble(payload, header)
    payload = stream.payload
    if header.codes_coding == "packed":
        assert len(payload) == -(-header.num_levels * header.num_frames * header.bits_per_code // 8)


def test_bytes_of_a_small_file():
    header = StreamHeader("m", 8, 3, 2, 5, 7, 3)
    data = write_stream(header, codes=np.array([[0, 4, 2], [1, 3, 4]]))
    assert data.hex(" ") == " ".join(
        [
            "56 51 41 43",  # magic
            "01 00",  # version 1, packed
            "01 6d",  # model_id "m"
            "08 03 02 05 07",  # sample_rate, hop_length, num_levels, codebook_size, num_samples
            "03",  # payload length
            "68 f0 08 c0",  # CRC32
            "06 35 00",  # codes 0 1 | 4 3 | 2 4 in 3 bits each, then zero padding
        ]
    )


def test_ten_seconds_at_6_kbps_is_7500_bytes_of_payload():
    header = SPEECH  # 10 s at 16 kHz, hop 320, 12 levels of 1024 codes
    assert header.bits_per_code == 10
    assert header.frame_rate == 50.0
    assert header.bitrate == 6000.0
    data = write_stream(header, codes=np.zeros((12, 500), dtype=np.int64))
    assert len(read_stream(data).payload) == 7500
    assert len(data) - 7500 < 200


@pytest.mark.parametrize("num_levels", [3, 6])  # 1.5 and 3 kbps
def test_one_second_clip_costs_under_60_bytes_of_overhead(num_levels):
    header = StreamHeader("vqcodec-16k:49b2ceea780d", 16000, 320, num_levels, 1024, 16000, 50)
    data = write_stream(header, codes=np.zeros((num_levels, 50), dtype=np.int64))
    assert len(data) - header.packed_size == 46 < 60


@pytest.mark.parametrize(
    "num_samples, width",
    [(0, 1), (127, 1), (128, 2), (16383, 2), (16384, 3), (2**21, 4), (2**35 - 1, 5), (2**35, 6), (MAX_NUM_SAMPLES, 6)],
)
def test_num_samples_varint_width(num_samples, width):
    hop = MAX_SAMPLE_RATE  # few frames, so even 2**40 samples need no large payload
    header = StreamHeader("m", hop, hop, 1, 2, num_samples, -(-num_samples // hop), coding="entropy")
    data = write_stream(header, payload=b"")
    assert read_stream(data).header == header
    assert data == assemble(b"", header)
    empty = write_stream(StreamHeader("m", hop, hop, 1, 2, 0, 0, coding="entropy"), payload=b"")
    assert len(data) - len(empty) == width - 1


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
        ({"model_id": "m" * 65}, "model_id"),
        ({"model_id": "vqcodec-16k:é"}, "printable ASCII"),
        ({"model_id": "vqcodec\n16k"}, "printable ASCII"),
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


@pytest.mark.parametrize("coding", ["packed", "entropy", "packed+pitch", "entropy+pitch"])
def test_every_byte_and_every_prefix_of_a_small_file_is_checked(coding):
    header = StreamHeader("m", 8, 3, 2, 5, 7, 3, coding=coding)
    pitch = b"\x9a\x40" if header.has_pitch else None
    if header.codes_coding == "packed":
        original = write_stream(header, codes=np.array([[0, 4, 2], [1, 3, 4]]), pitch=pitch)
    else:
        original = write_stream(header, payload=b"\x01\x02\x03", pitch=pitch)
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
        (MAGIC, CorruptStreamError, "truncated preamble: expected 5 bytes, got 4"),
        (MAGIC + b"\x02", UnsupportedVersionError, "version 2"),
        (MAGIC + b"\x01", CorruptStreamError, "truncated header: coding"),
        (MAGIC + b"\x01\x00\x05ab", CorruptStreamError, "truncated header: model_id needs 5 bytes"),
        (MAGIC + b"\x01\x00\x01m\x80", CorruptStreamError, "truncated header: sample_rate"),
    ],
)
def test_damaged_preamble_messages(data, error_type, message):
    with pytest.raises(error_type, match=message):
        read_stream(data)


def test_truncated_payload_and_crc_messages():
    original = write_stream(SPEECH, codes=np.zeros((12, 500), dtype=np.int64))
    with pytest.raises(CorruptStreamError, match="truncated payload: expected 7500 bytes, got 7499"):
        read_stream(original[:-1])
    with pytest.raises(CorruptStreamError, match="truncated header: CRC"):
        read_stream(original[:-7502])
    corrupted = bytearray(original)
    corrupted[-1] ^= 1
    with pytest.raises(CorruptStreamError, match="CRC mismatch"):
        read_stream(bytes(corrupted))


def test_the_documented_layout_is_accepted():
    assert read_stream(assemble(bytes(7500))).header == SPEECH


@pytest.mark.parametrize(
    "field", ["sample_rate", "hop_length", "num_levels", "codebook_size", "num_samples", "payload_length"]
)
def test_varints_not_in_shortest_form_are_rejected(field):
    value = 7500 if field == "payload_length" else getattr(SPEECH, field)
    name = field.replace("payload_length", "payload length")
    # num_levels (at most 32) has room for one byte only, so its longer form is caught as too long.
    with pytest.raises(CorruptStreamError, match=f"{name} is (not in its shortest varint form|longer than 1 varint)"):
        read_stream(assemble(bytes(7500), **{field: padded(value)}))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"coding": b"\x04"}, "unknown coding 4"),
        ({"model_id": b"\x00"}, "model_id length must be 1 to 64, got 0"),
        ({"model_id": b"\x41" + b"m" * 65}, "model_id length must be 1 to 64, got 65"),
        ({"model_id": b"\x02m\x00"}, "printable ASCII"),
        ({"model_id": b"\x02m\x7f"}, "printable ASCII"),
        ({"model_id": b"\x02m\xe9"}, "printable ASCII"),
        ({"sample_rate": leb128(0)}, "sample_rate must be in"),
        ({"sample_rate": leb128(MAX_SAMPLE_RATE + 1)}, "sample_rate is 1000001, more than the maximum"),
        ({"sample_rate": b"\xff" * 4}, "sample_rate is longer than 3 varint byte"),
        ({"hop_length": leb128(0)}, "hop_length must be in"),
        ({"hop_length": leb128(16001)}, "hop_length must be in"),
        ({"num_levels": leb128(0)}, "num_levels must be in"),
        ({"num_levels": leb128(33)}, "num_levels is 33, more than the maximum 32"),
        ({"num_levels": b"\x81\x00"}, "num_levels is longer than 1 varint byte"),
        ({"codebook_size": leb128(1)}, "codebook_size must be in"),
        ({"codebook_size": leb128(65537)}, "codebook_size is 65537, more than the maximum"),
        ({"num_samples": leb128(MAX_NUM_SAMPLES + 1)}, "num_samples is 1099511627777, more than the maximum"),
        ({"num_samples": b"\x80" * 7 + b"\x01"}, "num_samples is longer than 6 varint byte"),
        ({"payload_length": leb128(2**32)}, "payload length is 4294967296, more than the maximum"),
        ({"payload_length": leb128(7501)}, "truncated payload: expected 7501 bytes, got 7500"),
        ({"payload_length": leb128(7499)}, "1 trailing bytes"),
    ],
)
def test_invalid_fields_with_valid_crc_are_rejected(fields, message):
    with pytest.raises(CorruptStreamError, match=message):
        read_stream(assemble(bytes(7500), **fields))


def test_payload_length_must_match_header():
    with pytest.raises(CorruptStreamError, match="header implies 7500"):
        read_stream(assemble(bytes(7499)))


def test_code_beyond_codebook_is_rejected():
    # 1000 entries need 10 bits, so the packed value 1023 is representable but invalid.
    header = StreamHeader("m", 16000, 320, 1, 1000, 320, 1)
    stream = read_stream(assemble(pack_codes(np.array([[1023]]), 10), header))
    with pytest.raises(CorruptStreamError, match="code 1023 is out of range"):
        decode_packed(stream)


def test_a_pitch_stream_goes_with_the_pitch_codings_only():
    packed, with_pitch = StreamHeader("m", 8, 3, 2, 5, 7, 3), StreamHeader("m", 8, 3, 2, 5, 7, 3, coding="packed+pitch")
    codes = np.array([[0, 4, 2], [1, 3, 4]])
    with pytest.raises(ValueError, match="no pitch"):
        write_stream(packed, codes=codes, pitch=b"\x01")
    with pytest.raises(ValueError, match="a pitch"):
        write_stream(with_pitch, codes=codes)
    data = write_stream(with_pitch, codes=codes, pitch=b"\x01\x02")
    assert len(data) == len(write_stream(packed, codes=codes)) + 3  # length byte and 2 bytes
    stream = read_stream(data)
    assert stream.pitch == b"\x01\x02" and stream.header.has_pitch
    np.testing.assert_array_equal(decode_packed(stream), codes)
    assert read_stream(write_stream(packed, codes=codes)).pitch is None
