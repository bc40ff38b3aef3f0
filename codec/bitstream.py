"""The on-disk format of encoded audio: a small self-describing header, then the codes.

Layout, all integers little-endian (format version 1):

    offset        size  field
    0             4     magic b"VQAC"
    4             1     format version, uint8 (1)
    5             2     header length H, uint16
    7             H     header: `StreamHeader` as compact JSON (sorted keys, no spaces), ASCII
    7 + H         4     payload length P, uint32
    11 + H        4     CRC32 of header + payload, uint32
    15 + H        P     payload

For coding "packed" the payload holds the codes [K, N] in frame-major order (the K levels of
frame 0, then of frame 1, ...), each written MSB-first in `bits_per_code` bits, the last byte
padded with zero bits; so the file is the true code bitrate plus about 150 bytes. For coding
"entropy" the payload is opaque bytes produced by the entropy coder.

The reader accepts exactly what the writer produces: anything else (a truncated file, a changed
byte, trailing data, a header that is not canonical JSON) raises `CorruptStreamError`, never
another exception type. The CRC covers the header and the payload, so any single changed byte
there is caught; the fixed fields are checked by structure.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from codec.errors import CorruptStreamError, UnsupportedVersionError

MAGIC = b"VQAC"
FORMAT_VERSION = 1
CODINGS = ("packed", "entropy")

# Bounds that reject absurd headers before anyone allocates memory for them.
MAX_MODEL_ID_LENGTH = 256
MAX_SAMPLE_RATE = 1_000_000
MAX_NUM_LEVELS = 32
MAX_CODEBOOK_SIZE = 65536
MAX_NUM_SAMPLES = 2**40
MAX_PAYLOAD_BYTES = 2**32 - 1

_PREAMBLE = struct.Struct("<4sBH")  # magic, version, header length
_PAYLOAD_INFO = struct.Struct("<II")  # payload length, CRC32
_INT_FIELDS = ("sample_rate", "hop_length", "num_levels", "codebook_size", "num_samples", "num_frames")


@dataclass(frozen=True)
class StreamHeader:
    """Everything needed to decode a stream, stored as JSON at the start of the file."""

    model_id: str  # name and weights hash of the model that wrote the codes
    sample_rate: int
    hop_length: int  # samples per frame
    num_levels: int  # K, codebooks (levels) per frame
    codebook_size: int
    num_samples: int  # original length at sample_rate, to trim the decoded audio
    num_frames: int  # N, always ceil(num_samples / hop_length)
    coding: str = "packed"  # "packed" (fixed-width codes) or "entropy" (opaque payload)

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str):
            raise TypeError(f"model_id must be a str, got {type(self.model_id).__name__}")
        if not isinstance(self.coding, str):
            raise TypeError(f"coding must be a str, got {type(self.coding).__name__}")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            # Accept numpy integers but not bools or floats, and store plain ints for JSON.
            if isinstance(value, (bool, np.bool_)) or not hasattr(type(value), "__index__"):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            object.__setattr__(self, name, operator.index(value))

        if not 1 <= len(self.model_id) <= MAX_MODEL_ID_LENGTH:
            raise ValueError(f"model_id must have 1 to {MAX_MODEL_ID_LENGTH} characters, got {len(self.model_id)}")
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
        if self.coding == "packed" and self.packed_size > MAX_PAYLOAD_BYTES:
            raise ValueError(f"packed payload of {self.packed_size} bytes exceeds {MAX_PAYLOAD_BYTES} bytes")

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
    payload: bytes


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


def _encode_header(header: StreamHeader) -> bytes:
    text = json.dumps(dataclasses.asdict(header), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("ascii")


def write_stream(header: StreamHeader, codes: np.ndarray | None = None, payload: bytes | None = None) -> bytes:
    """Serialize a stream to bytes.

    Args:
        header: describes the stream; `header.coding` chooses what else is needed.
        codes: for "packed" coding, integer codes [K, N] in [0, codebook_size), matching the header.
        payload: for "entropy" coding, the entropy coder's bytes, stored as they are.
    """
    if header.coding == "packed":
        if codes is None or payload is not None:
            raise ValueError("packed coding takes codes and no payload")
        codes = np.asarray(codes)
        expected_shape = (header.num_levels, header.num_frames)
        if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be a 2-D integer array [K, N], got {codes.ndim}-D {codes.dtype}")
        if codes.shape != expected_shape:
            raise ValueError(f"codes have shape {codes.shape}, header says [K, N] = {list(expected_shape)}")
        if codes.size and (codes.min() < 0 or codes.max() >= header.codebook_size):
            raise ValueError(
                f"codes must be in [0, {header.codebook_size}), got [{codes.min()}, {codes.max()}]"
            )
        payload = pack_codes(codes, header.bits_per_code)
    else:
        if payload is None or codes is not None:
            raise ValueError(f"{header.coding} coding takes a payload and no codes")
        payload = bytes(payload)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES} bytes")

    header_bytes = _encode_header(header)
    crc = zlib.crc32(payload, zlib.crc32(header_bytes))
    return b"".join([
        _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header_bytes)),
        header_bytes,
        _PAYLOAD_INFO.pack(len(payload), crc),
        payload,
    ])


def read_stream(data: bytes) -> Stream:
    """Parse and verify a stream written by `write_stream`; raises CorruptStreamError if it is not one."""
    data = bytes(data)
    if not data:
        raise CorruptStreamError("empty input: expected a codec stream")
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise CorruptStreamError(f"not a codec stream: expected magic {MAGIC!r}, got {data[:len(MAGIC)]!r}")
    if len(data) < _PREAMBLE.size:
        raise CorruptStreamError(f"truncated preamble: expected {_PREAMBLE.size} bytes, got {len(data)}")
    _, version, header_length = _PREAMBLE.unpack_from(data)
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"unsupported format version {version}: this code reads version {FORMAT_VERSION}"
        )

    payload_start = _PREAMBLE.size + header_length + _PAYLOAD_INFO.size
    if len(data) < payload_start:
        raise CorruptStreamError(
            f"truncated header: expected {payload_start} bytes before the payload, got {len(data)}"
        )
    header_bytes = data[_PREAMBLE.size : _PREAMBLE.size + header_length]
    payload_length, stored_crc = _PAYLOAD_INFO.unpack_from(data, _PREAMBLE.size + header_length)
    available = len(data) - payload_start
    if available < payload_length:
        raise CorruptStreamError(f"truncated payload: expected {payload_length} bytes, got {available}")
    if available > payload_length:
        raise CorruptStreamError(f"{available - payload_length} trailing bytes after the payload")
    payload = data[payload_start:]
    crc = zlib.crc32(payload, zlib.crc32(header_bytes))
    if crc != stored_crc:
        raise CorruptStreamError(f"CRC mismatch: stored {stored_crc:#010x}, computed {crc:#010x}")

    header = _parse_header(header_bytes)
    if header.coding == "packed" and payload_length != header.packed_size:
        raise CorruptStreamError(
            f"packed payload is {payload_length} bytes, header implies {header.packed_size} "
            f"({header.num_levels} x {header.num_frames} codes of {header.bits_per_code} bits)"
        )
    return Stream(header=header, payload=payload)


def _parse_header(header_bytes: bytes) -> StreamHeader:
    try:
        fields = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CorruptStreamError(f"header is not valid JSON: {error}") from None
    if not isinstance(fields, dict):
        raise CorruptStreamError(f"header must be a JSON object, got {type(fields).__name__}")
    names = {field.name for field in dataclasses.fields(StreamHeader)}
    if missing := sorted(names - fields.keys()):
        raise CorruptStreamError(f"header is missing fields: {', '.join(missing)}")
    if unknown := sorted(fields.keys() - names):
        raise CorruptStreamError(f"header has unknown fields: {', '.join(unknown)}")
    try:
        header = StreamHeader(**fields)
    except (TypeError, ValueError) as error:
        raise CorruptStreamError(f"invalid header: {error}") from None
    # Only the writer's exact bytes are accepted, so no two files decode to the same header.
    if _encode_header(header) != header_bytes:
        raise CorruptStreamError("header is not canonical JSON (sorted keys, no spaces, ASCII)")
    return header


def decode_packed(stream: Stream) -> np.ndarray:
    """Unpack the codes [K, N] (int64) of a "packed" stream; raises CorruptStreamError if invalid."""
    header = stream.header
    if header.coding != "packed":
        raise ValueError(f"stream uses {header.coding!r} coding, not 'packed'")
    codes = unpack_codes(stream.payload, header.num_levels, header.num_frames, header.bits_per_code)
    if codes.size and codes.max() >= header.codebook_size:
        raise CorruptStreamError(f"code {codes.max()} is out of range for codebook size {header.codebook_size}")
    return codes
