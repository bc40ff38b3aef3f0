"""The on-disk format of encoded audio: a small self-describing binary header, then the codes.

Layout of format version 1, in file order. A "varint" is an unsigned LEB128 integer (7 bits per
byte, least significant group first, the high bit set on every byte but the last) written in its
shortest form.

    size    field
    4       magic b"VQAC"
    1       format version, uint8 (1)
    1       coding, uint8: 0 "packed", 1 "entropy", 2 "packed+pitch", 3 "entropy+pitch"
    1       model_id length L, uint8 (1 to 64)
    L       model_id, printable ASCII (0x20 to 0x7E)
    1..3    sample_rate, varint (1 to 1_000_000)
    1..3    hop_length, varint (1 to sample_rate)
    1       num_levels K, varint (1 to 32)
    1..3    codebook_size, varint (2 to 65536), stored exactly rather than as a bit width
    1..6    num_samples, varint (0 to 2**40)
    1..5    payload length P, varint (0 to 2**32 - 1)
    4       CRC32 of every byte before this field followed by the payload, uint32 little-endian
    P       payload

num_frames N is not stored: it is ceil(num_samples / hop_length). Varints keep short clips cheap:
with the 24-character model id "vqcodec-16k:49b2ceea780d" at 16 kHz, hop 320 and 1024 codes, a
clip of under 16384 samples (~1 s) with a payload under 16 KiB costs 46 bytes on top of the
payload, 0.37 kbps at 1 s; longer clips add a byte per 7 bits of num_samples or payload length.

For coding "packed" the payload holds the codes [K, N] in frame-major order (the K levels of
frame 0, then of frame 1, ...), each written MSB-first in `bits_per_code` bits, the last byte
padded with zero bits. For coding "entropy" the payload is opaque bytes from the entropy coder.
The "+pitch" codings start the payload with a pitch side stream (`codec.pitchcode`): its length
Q as a varint, its Q bytes, then the codes as for "packed" or "entropy".

The reader accepts exactly what the writer produces: anything else (a truncated file, a changed
byte, trailing data, a varint that is not in its shortest form, a value out of range) raises
`CorruptStreamError`, never another exception type, so every header has exactly one byte form.
Every length is checked against the bytes actually present before it is used, so no value read
from a file makes the reader allocate more than the file's size. The CRC covers every byte but its
own, so a single changed byte that still parses is caught.
"""

from __future__ import annotations

import operator
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from codec.errors import CorruptStreamError, UnsupportedVersionError

MAGIC = b"VQAC"
FORMAT_VERSION = 1
CODINGS = ("packed", "entropy", "packed+pitch", "entropy+pitch")  # the index is the coding byte

# Bounds that reject absurd headers before anyone allocates memory for them.
MAX_MODEL_ID_LENGTH = 64
MAX_SAMPLE_RATE = 1_000_000
MAX_NUM_LEVELS = 32
MAX_CODEBOOK_SIZE = 65536
MAX_NUM_SAMPLES = 2**40
MAX_PAYLOAD_BYTES = 2**32 - 1

_PREAMBLE_SIZE = len(MAGIC) + 1  # magic, version: all a reader of another version may rely on
_CRC = struct.Struct("<I")
_INT_FIELDS = ("sample_rate", "hop_length", "num_levels", "codebook_size", "num_samples", "num_frames")
# The varint fields in file order, with the largest value the reader accepts for each.
_VARINT_FIELDS = (
    ("sample_rate", MAX_SAMPLE_RATE),
    ("hop_length", MAX_SAMPLE_RATE),
    ("num_levels", MAX_NUM_LEVELS),
    ("codebook_size", MAX_CODEBOOK_SIZE),
    ("num_samples", MAX_NUM_SAMPLES),
)


@dataclass(frozen=True)
class StreamHeader:
    """Everything needed to decode a stream, stored in binary at the start of the file."""

    model_id: str  # name and weights hash of the model that wrote the codes, printable ASCII
    sample_rate: int
    hop_length: int  # samples per frame
    num_levels: int  # K, codebooks (levels) per frame
    codebook_size: int
    num_samples: int  # original length at sample_rate, to trim the decoded audio
    num_frames: int  # N, always ceil(num_samples / hop_length); not stored in the file
    coding: str = "packed"  # "packed" (fixed-width codes) or "entropy" (opaque payload), "+pitch" with a pitch stream

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str):
            raise TypeError(f"model_id must be a str, got {type(self.model_id).__name__}")
        if not isinstance(self.coding, str):
            raise TypeError(f"coding must be a str, got {type(self.coding).__name__}")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            # Accept numpy integers but not bools or floats, and store plain ints.
            if isinstance(value, (bool, np.bool_)) or not hasattr(type(value), "__index__"):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            object.__setattr__(self, name, operator.index(value))

        if not 1 <= len(self.model_id) <= MAX_MODEL_ID_LENGTH:
            raise ValueError(f"model_id must have 1 to {MAX_MODEL_ID_LENGTH} characters, got {len(self.model_id)}")
        if not (self.model_id.isascii() and self.model_id.isprintable()):
            raise ValueError(f"model_id must be printable ASCII, got {self.model_id!r}")
        if self.coding not in CODINGS:
            raise ValueError(f"coding must be one of {CODINGS}, got {self.coding!r}")
        _check_range("sample_rate", self.sample_rate, 1, MAX_SAMPLE_RATE)
        _check_range("hop_length", self.hop_length, 1, self.sample_rate)
        _check_range("num_levels", self.num_levels, 1, MAX_NUM_LEVELS)
        _check_range("codebook_size", self.codebook_size, 2, MAX_CODEBOOK_SIZE)
        _check_range("num_samples", self.num_samples, 0, MAX_NUM_SAMPLES)
        expected_frames = -(-self.num_samples // self.hop_length)
        if self.num_frames != expected_frames:
            raise ValueError(
                f"num_frames is {self.num_frames}, expected ceil(num_samples / hop_length) = {expected_frames}"
            )
        if self.codes_coding == "packed" and self.packed_size > MAX_PAYLOAD_BYTES:
            raise ValueError(f"packed payload of {self.packed_size} bytes exceeds {MAX_PAYLOAD_BYTES} bytes")

    @property
    def codes_coding(self) -> str:
        """How the codes are stored: "packed" or "entropy"."""
        return self.coding.split("+")[0]

    @property
    def has_pitch(self) -> bool:
        return self.coding.endswith("+pitch")

    @property
    def bits_per_code(self) -> int:
        """ceil(log2(codebook_size)), the width of one packed code."""
        return (self.codebook_size - 1).bit_length()

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def bitrate(self) -> float:
        """Bits per second of the packed codes (the payload, without the header)."""
        return self.num_levels * self.bits_per_code * self.frame_rate

    @property
    def packed_size(self) -> int:
        """Bytes of the packed payload: ceil(K * N * bits_per_code / 8)."""
        return packed_size(self.num_levels * self.num_frames, self.bits_per_code)


@dataclass(frozen=True)
class Stream:
    """A parsed stream: its header and its raw payload (packed codes or entropy-coded bytes)."""

    header: StreamHeader
    payload: bytes  # the codes' bytes (for "+pitch" codings, after the pitch stream)
    pitch: bytes | None = None  # the pitch stream of a "+pitch" coding

    @property
    def payload_size(self) -> int:
        """Bytes after the CRC: the codes, and the pitch stream with its length field if any."""
        if self.pitch is None:
            return len(self.payload)
        return len(_varint(len(self.pitch))) + len(self.pitch) + len(self.payload)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in [1, 16], got {bits}")


def packed_size(num_codes: int, bits: int) -> int:
    """Bytes needed for `num_codes` codes of `bits` bits, padded to a whole byte."""
    return -(-num_codes * bits // 8)


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack integer codes [K, N] frame-major, MSB-first, `bits` bits each (1 to 16).

    Returns ceil(K * N * bits / 8) bytes; the unused bits of the last byte are zero.
    """
    _check_bits(bits)
    codes = np.asarray(codes)
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be a 2-D integer array [K, N], got {codes.ndim}-D {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= 2**bits):
        raise ValueError(f"codes must be in [0, {2**bits}) to fit {bits} bits, got [{codes.min()}, {codes.max()}]")
    # Big-endian uint16 bytes unpack to 16 bits MSB-first; keep the low `bits` of each code.
    values = np.ascontiguousarray(codes.T, dtype=">u2").reshape(-1, 1).view(np.uint8)  # [K * N, 2]
    code_bits = np.unpackbits(values, axis=1)[:, 16 - bits :]  # [K * N, bits]
    return np.packbits(code_bits.reshape(-1)).tobytes()


def unpack_codes(data: bytes, num_levels: int, num_frames: int, bits: int) -> np.ndarray:
    """Inverse of `pack_codes`: returns the codes [K, N] as int64.

    Raises CorruptStreamError if `data` has the wrong length or nonzero padding bits.
    """
    _check_bits(bits)
    if num_levels < 0 or num_frames < 0:
        raise ValueError(f"num_levels and num_frames must be >= 0, got {num_levels} and {num_frames}")
    num_codes = num_levels * num_frames
    expected = packed_size(num_codes, bits)
    if len(data) != expected:
        raise CorruptStreamError(
            f"packed payload is {len(data)} bytes, expected {expected} for "
            f"{num_levels} x {num_frames} codes of {bits} bits"
        )
    raw = np.frombuffer(data, dtype=np.uint8)
    padding = 8 * expected - num_codes * bits
    if padding and raw[-1] & ((1 << padding) - 1):
        raise CorruptStreamError("packed payload has nonzero padding bits")
    code_bits = np.zeros((num_codes, 16), dtype=np.uint8)
    code_bits[:, 16 - bits :] = np.unpackbits(raw, count=num_codes * bits).reshape(num_codes, bits)
    values = np.packbits(code_bits, axis=1).view(">u2").reshape(num_frames, num_levels)  # [N, K]
    return np.ascontiguousarray(values.T, dtype=np.int64)


def _varint(value: int) -> bytes:
    """`value` >= 0 as an unsigned LEB128 varint in its shortest form."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_header(header: StreamHeader, payload_length: int) -> bytes:
    """Every byte of the file before the CRC."""
    model_id = header.model_id.encode("ascii")
    fields = [_varint(getattr(header, name)) for name, _ in _VARINT_FIELDS]
    return b"".join(
        [
            MAGIC,
            bytes([FORMAT_VERSION, CODINGS.index(header.coding), len(model_id)]),
            model_id,
            *fields,
            _varint(payload_length),
        ]
    )


class _Reader:
    """Reads fields in order from `data`, raising CorruptStreamError where they run out or are malformed."""

    def __init__(self, data: bytes, offset: int):
        self.data = data
        self.offset = offset

    def take(self, size: int, name: str) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise CorruptStreamError(
                f"truncated header: {name} needs {size} bytes at offset {self.offset}, "
                f"got {len(self.data) - self.offset}"
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def uint8(self, name: str) -> int:
        return self.take(1, name)[0]

    def varint(self, name: str, limit: int) -> int:
        # Never read more bytes than `limit` needs, so a run of continuation bits stops early.
        max_bytes = max(1, -(-limit.bit_length() // 7))
        value = 0
        for index in range(max_bytes):
            byte = self.uint8(name)
            value |= (byte & 0x7F) << (7 * index)
            if byte < 0x80:
                # A zero last byte after others adds nothing: the same value has a shorter form.
                if byte == 0 and index > 0:
                    raise CorruptStreamError(f"{name} is not in its shortest varint form")
                if value > limit:
                    raise CorruptStreamError(f"{name} is {value}, more than the maximum {limit}")
                return value
        raise CorruptStreamError(
            f"{name} is longer than {max_bytes} varint byte(s), all that its maximum {limit} needs"
        )


def write_stream(
    header: StreamHeader, codes: np.ndarray | None = None, payload: bytes | None = None, pitch: bytes | None = None
) -> bytes:
    """Serialize a stream to bytes.

    Args:
        header: describes the stream; `header.coding` chooses what else is needed.
        codes: for "packed" coding, integer codes [K, N] in [0, codebook_size), matching the header.
        payload: for "entropy" coding, the entropy coder's bytes, stored as they are.
        pitch: for the "+pitch" codings (and only for them), the pitch stream's bytes.
    """
    if header.has_pitch != (pitch is not None):
        raise ValueError(f"{header.coding} coding takes {'a' if header.has_pitch else 'no'} pitch stream")
    if header.codes_coding == "packed":
        if codes is None or payload is not None:
            raise ValueError("packed coding takes codes and no payload")
        codes = np.asarray(codes)
        expected_shape = (header.num_levels, header.num_frames)
        if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be a 2-D integer array [K, N], got {codes.ndim}-D {codes.dtype}")
        if codes.shape != expected_shape:
            raise ValueError(f"codes have shape {codes.shape}, header says [K, N] = {list(expected_shape)}")
        if codes.size and (codes.min() < 0 or codes.max() >= header.codebook_size):
            raise ValueError(f"codes must be in [0, {header.codebook_size}), got [{codes.min()}, {codes.max()}]")
        payload = pack_codes(codes, header.bits_per_code)
    else:
        if payload is None or codes is not None:
            raise ValueError(f"{header.coding} coding takes a payload and no codes")
        payload = bytes(payload)
    if pitch is not None:
        payload = _varint(len(pitch)) + bytes(pitch) + payload
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES} bytes")

    header_bytes = _encode_header(header, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(header_bytes))
    return b"".join([header_bytes, _CRC.pack(crc), payload])


def read_stream(data: bytes) -> Stream:
    """Parse and verify a stream written by `write_stream`; raises CorruptStreamError if it is not one."""
    data = bytes(data)
    if not data:
        raise CorruptStreamError("empty input: expected a codec stream")
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise CorruptStreamError(f"not a codec stream: expected magic {MAGIC!r}, got {data[: len(MAGIC)]!r}")
    if len(data) < _PREAMBLE_SIZE:
        raise CorruptStreamError(f"truncated preamble: expected {_PREAMBLE_SIZE} bytes, got {len(data)}")
    version = data[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(f"unsupported format version {version}: this code reads version {FORMAT_VERSION}")

    reader = _Reader(data, _PREAMBLE_SIZE)
    coding = reader.uint8("coding")
    if coding >= len(CODINGS):
        raise CorruptStreamError(f"unknown coding {coding}: expected 0 to {len(CODINGS) - 1} ({', '.join(CODINGS)})")
    model_id_length = reader.uint8("model_id length")
    if not 1 <= model_id_length <= MAX_MODEL_ID_LENGTH:
        raise CorruptStreamError(f"model_id length must be 1 to {MAX_MODEL_ID_LENGTH}, got {model_id_length}")
    # Latin-1 maps every byte to one character, so StreamHeader sees and rejects non-ASCII ones.
    model_id = reader.take(model_id_length, "model_id").decode("latin-1")
    fields = {name: reader.varint(name, limit) for name, limit in _VARINT_FIELDS}
    payload_length = reader.varint("payload length", MAX_PAYLOAD_BYTES)
    crc_offset = reader.offset
    (stored_crc,) = _CRC.unpack(reader.take(_CRC.size, "CRC"))

    available = len(data) - reader.offset
    if available < payload_length:
        raise CorruptStreamError(f"truncated payload: expected {payload_length} bytes, got {available}")
    if available > payload_length:
        raise CorruptStreamError(f"{available - payload_length} trailing bytes after the payload")
    payload = data[reader.offset :]
    crc = zlib.crc32(payload, zlib.crc32(memoryview(data)[:crc_offset]))
    if crc != stored_crc:
        raise CorruptStreamError(f"CRC mismatch: stored {stored_crc:#010x}, computed {crc:#010x}")

    # A hop of 0 is rejected by StreamHeader; max() only keeps the division defined until then.
    num_frames = -(-fields["num_samples"] // max(fields["hop_length"], 1))
    try:
        header = StreamHeader(model_id=model_id, num_frames=num_frames, coding=CODINGS[coding], **fields)
    except ValueError as error:
        raise CorruptStreamError(f"invalid header: {error}") from None
    pitch = None
    if header.has_pitch:
        inner = _Reader(payload, 0)
        pitch_length = inner.varint("pitch stream length", payload_length)
        pitch = inner.take(pitch_length, "pitch stream")
        payload = payload[inner.offset :]
    if header.codes_coding == "packed" and len(payload) != header.packed_size:
        raise CorruptStreamError(
            f"packed payload is {len(payload)} bytes, header implies {header.packed_size} "
            f"({header.num_levels} x {header.num_frames} codes of {header.bits_per_code} bits)"
        )
    return Stream(header=header, payload=payload, pitch=pitch)


def decode_packed(stream: Stream) -> np.ndarray:
    """Unpack the codes [K, N] (int64) of a "packed" stream; raises CorruptStreamError if invalid."""
    header = stream.header
    if header.codes_coding != "packed":
        raise ValueError(f"stream uses {header.coding!r} coding, not 'packed'")
    codes = unpack_codes(stream.payload, header.num_levels, header.num_frames, header.bits_per_code)
    if codes.size and codes.max() >= header.codebook_size:
        raise CorruptStreamError(f"code {codes.max()} is out of range for codebook size {header.codebook_size}")
    return codes
