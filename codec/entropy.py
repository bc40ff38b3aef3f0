"""Lossless coding of code symbols with the probabilities of a model: an rANS entropy coder.

The prior gives one distribution over V symbols per code, one step at a time (the decoder needs
each decoded symbol before it can compute the next distribution). `quantize_probabilities` turns
each distribution into integer frequencies that sum to 2**precision; the encoder and the decoder
must derive exactly the same frequencies, so they must feed it bitwise-identical probabilities
(the same model, run the same incremental way, on the same kind of device). Its output depends
only on the input's bits: no float sum whose rounding could depend on order, SIMD width or batch
shape. It is not robust to *different* inputs: a float that changes in its last bit may change a
frequency, and then the stream decodes to garbage, which the caller's CRC of the codes catches.

    frequencies = quantize_probabilities(probs)                  # [M, V] float -> [M, V] int64
    data = encode_symbols(symbols, frequencies)                  # symbols [M] -> bytes
    symbols = decode_symbols(data, len(symbols), lambda i, decoded: frequencies[i])

or, step by step, as a decoder driven by a model must:

    decoder = RangeDecoder(data)
    decoded = []
    for i in range(num_symbols):
        probs = prior_step(decoded)                                    # [V] float
        decoded.append(decoder.decode(quantize_probabilities(probs)))
    decoder.finish()                                                   # CorruptStreamError if bad

The coder is rANS (range asymmetric numeral systems; Duda 2013, in the byte-wise form of
Giesen's ryg_rans) with exact Python integers. The encoder buffers the symbols and codes them in
reverse order when it finishes; the decoder then yields them in forward order, one per call,
with each symbol's frequencies given only when it is decoded. Parameters, with total T =
2**precision:

    state x in [L, 256 L), L = 2**23; the encoder starts from x = L
    encode s (start c, frequency f; in reverse order):
        while x >= 2**(23 - precision + 8) * f: emit the byte x & 255; x >>= 8
        x = (x // f) * T + c + x % f
    decode: slot = x % T; s is the symbol with c <= slot < c + f
        x = f * (x // T) + slot - c
        while x < L: x = 256 x + next byte

Payload layout: the encoder's final state as 4 bytes big-endian, then the emitted bytes in the
order the decoder reads them (the reverse of the order they were emitted). A valid payload ends
exactly when the decoder, after its last symbol, is back at x = L with every byte read, so
`RangeDecoder.finish` rejects nearly all damaged payloads (a random one passes with probability
about 2**-31) besides the caller's CRC. The decoder never reads past the end of the data: that
raises `CorruptStreamError` at once. It always returns symbols in [0, V) and cannot hang.
"""

from __future__ import annotations

import math
import operator
from typing import Callable

import numpy as np

from codec.errors import CorruptStreamError

DEFAULT_PRECISION = 16
MAX_PRECISION = 16  # keeps quantize_probabilities' int64 products below 2**63
STATE_BITS = 23  # L = 2**23, so the state fits in 31 bits and is flushed in 4 bytes
STATE_BYTES = 4
_LOWER = 1 << STATE_BITS
_UPPER = _LOWER << 8
_RATIO_BITS = 30  # probabilities become integers in [0, 2**30] relative to the row's maximum
_BLOCK_ROWS = 64  # rows per block of batched numpy work


def _check_precision(precision: int) -> None:
    if not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in [1, {MAX_PRECISION}], got {precision}")


def quantize_probabilities(probs: np.ndarray, precision: int = DEFAULT_PRECISION) -> np.ndarray:
    """Integer frequencies [V] or [M, V] (int64) of probabilities [V] or [M, V] (any float).

    Each row sums to exactly 2**precision and every symbol gets at least 1, so any symbol can be
    coded even where the model said 0. Rows need not be normalised. A row with a NaN or +inf,
    or with nothing positive, becomes uniform; negative entries (-inf too) count as 0.

    Deterministic: bitwise-identical input gives identical output, whatever the batch shape (a
    row of an [M, V] batch quantizes as the same [V] vector alone). Every step is exact (a
    correctly rounded division by the row's maximum, then integer arithmetic), so nothing
    depends on summation order or on the machine.
    """
    _check_precision(precision)
    probs = np.asarray(probs)
    if probs.ndim not in (1, 2) or probs.shape[-1] < 1:
        raise ValueError(f"probs must have shape [V] or [M, V] with V >= 1, got {probs.shape}")
    if probs.shape[-1] > 1 << precision:
        raise ValueError(f"{probs.shape[-1]} symbols cannot each get a frequency >= 1 out of 2**{precision}")
    if probs.ndim == 1 or len(probs) <= _BLOCK_ROWS:
        return _quantize_rows(probs, precision)
    # Blocks of rows keep the temporaries in cache; rows are independent, so results are equal.
    frequencies = np.empty(probs.shape, dtype=np.int64)
    for first in range(0, len(probs), _BLOCK_ROWS):
        frequencies[first : first + _BLOCK_ROWS] = _quantize_rows(probs[first : first + _BLOCK_ROWS], precision)
    return frequencies


def _quantize_rows(probs: np.ndarray, precision: int) -> np.ndarray:
    total = 1 << precision
    num_symbols = probs.shape[-1]
    p = np.maximum(probs, 0.0, dtype=np.float64)  # float32 -> float64 is exact; NaN stays NaN
    scale = p.max(axis=-1, keepdims=True)  # NaN if the row has one
    usable = (scale > 0) & (scale < np.inf)  # False for NaN
    if not usable.all():
        p = np.where(usable, p, 1.0)
        scale = np.where(usable, scale, 1.0)
    # Weights in [0, 2**30], the largest exactly 2**30, so the row total S >= 2**30 and small
    # probabilities keep about 30 bits of resolution relative to it. The cast truncates (= floor).
    np.divide(p, scale, out=p)
    p *= float(1 << _RATIO_BITS)
    cumulative = np.cumsum(p.astype(np.int64), axis=-1)  # exact: integer addition
    # Spread total - V over the symbols in proportion to their weights by rounding the
    # *cumulative* distribution down: the differences are >= 0 and sum to exactly total - V,
    # each within 1 of its ideal share. Products stay below V * 2**30 * 2**16 <= 2**62.
    bounds = cumulative * (total - num_symbols) // cumulative[..., -1:]
    frequencies = np.empty_like(bounds)
    frequencies[..., :1] = bounds[..., :1]
    np.subtract(bounds[..., 1:], bounds[..., :-1], out=frequencies[..., 1:])
    frequencies += 1
    return frequencies


class RangeEncoder:
    """Encodes symbols under integer frequency tables; `finish` returns the payload.

    Symbols are buffered as (start, frequency) pairs and coded in reverse order by `finish`:
    rANS decodes in the order opposite to encoding, and the decoder must go forwards.
    """

    def __init__(self, precision: int = DEFAULT_PRECISION):
        _check_precision(precision)
        self.precision = precision
        self._starts: list[int] = []
        self._frequencies: list[int] = []
        self._finished = False

    def encode(self, symbol: int, frequencies: np.ndarray) -> None:
        """Add one symbol in [0, V) under frequencies [V] (non-negative, summing to 2**precision)."""
        if self._finished:
            raise ValueError("the encoder is finished")
        frequencies = np.asarray(frequencies)
        if frequencies.ndim != 1 or frequencies.dtype.kind not in "iu":
            raise ValueError(f"frequencies must be an integer vector [V], got {frequencies.ndim}-D {frequencies.dtype}")
        symbol = operator.index(symbol)
        if not 0 <= symbol < len(frequencies):
            raise ValueError(f"symbol must be in [0, {len(frequencies)}), got {symbol}")
        total = 1 << self.precision
        if frequencies.min() < 0 or frequencies.max() > total or int(frequencies.sum()) != total:
            raise ValueError(f"frequencies must be non-negative and sum to 2**{self.precision}")
        frequency = int(frequencies[symbol])
        if frequency < 1:
            raise ValueError("a symbol with frequency 0 cannot be encoded")
        self._starts.append(int(frequencies[:symbol].sum()))
        self._frequencies.append(frequency)

    def encode_many(self, symbols: np.ndarray, frequencies: np.ndarray) -> None:
        """Add symbols [M], each under its own row of frequencies [M, V]."""
        if self._finished:
            raise ValueError("the encoder is finished")
        symbols = np.asarray(symbols)
        frequencies = np.asarray(frequencies)
        if frequencies.ndim != 2 or not np.issubdtype(frequencies.dtype, np.integer):
            raise ValueError(
                f"frequencies must be an integer array [M, V], got {frequencies.ndim}-D {frequencies.dtype}"
            )
        if symbols.ndim != 1 or not (np.issubdtype(symbols.dtype, np.integer) or symbols.size == 0):
            raise ValueError(f"symbols must be an integer array [M], got {symbols.ndim}-D {symbols.dtype}")
        if len(symbols) != len(frequencies):
            raise ValueError(f"{len(symbols)} symbols but {len(frequencies)} rows of frequencies")
        if symbols.size == 0:
            return
        frequencies = frequencies.astype(np.int64, copy=False)
        num_symbols = frequencies.shape[1]
        if symbols.min() < 0 or symbols.max() >= num_symbols:
            raise ValueError(f"symbols must be in [0, {num_symbols}), got [{symbols.min()}, {symbols.max()}]")
        total = 1 << self.precision
        # The bounds first, so that the sums cannot overflow.
        if frequencies.min() < 0 or frequencies.max() > total or (frequencies.sum(axis=1) != total).any():
            raise ValueError(f"every row of frequencies must be non-negative and sum to 2**{self.precision}")
        rows = np.arange(len(symbols))
        chosen = frequencies[rows, symbols]
        if chosen.min() < 1:
            raise ValueError("a symbol with frequency 0 cannot be encoded")
        # start = the frequencies of the symbols before it; in blocks of rows to stay in cache.
        for first in range(0, len(symbols), _BLOCK_ROWS):
            block = slice(first, first + _BLOCK_ROWS)
            before = np.arange(num_symbols) < symbols[block, None]
            self._starts.extend(np.sum(frequencies[block], axis=1, where=before).tolist())
        self._frequencies.extend(chosen.tolist())

    def finish(self) -> bytes:
        """Code every buffered symbol and return the payload."""
        if self._finished:
            raise ValueError("the encoder is finished")
        self._finished = True
        precision = self.precision
        renorm_bits = STATE_BITS - precision + 8
        out = bytearray()
        x = _LOWER
        for start, frequency in zip(reversed(self._starts), reversed(self._frequencies)):
            limit = frequency << renorm_bits
            while x >= limit:
                out.append(x & 0xFF)
                x >>= 8
            quotient, remainder = divmod(x, frequency)
            x = (quotient << precision) + start + remainder
        out += x.to_bytes(STATE_BYTES, "little")
        out.reverse()
        return bytes(out)


class RangeDecoder:
    """Decodes, one call per symbol, a payload written by `RangeEncoder`.

    Raises CorruptStreamError, and nothing else, on damaged data (given valid frequencies).
    """

    def __init__(self, data: bytes, precision: int = DEFAULT_PRECISION):
        _check_precision(precision)
        self.precision = precision
        self._data = bytes(data)
        if len(self._data) < STATE_BYTES:
            raise CorruptStreamError(f"entropy-coded payload of {len(self._data)} bytes, need at least {STATE_BYTES}")
        self._state = int.from_bytes(self._data[:STATE_BYTES], "big")
        if not _LOWER <= self._state < _UPPER:
            raise CorruptStreamError(f"entropy coder initial state {self._state:#x} is out of range")
        self._position = STATE_BYTES

    def decode(self, frequencies: np.ndarray) -> int:
        """The next symbol, in [0, V), under frequencies [V] (non-negative, summing to 2**precision)."""
        frequencies = np.asarray(frequencies)
        total = 1 << self.precision
        if frequencies.ndim != 1 or frequencies.dtype.kind not in "iu" or len(frequencies) == 0:
            raise ValueError(f"frequencies must be an integer vector [V], got {frequencies.ndim}-D {frequencies.dtype}")
        cumulative = np.cumsum(frequencies)
        if cumulative[-1] != total:
            raise ValueError(f"frequencies must sum to 2**{self.precision}, got {cumulative[-1]}")
        x = self._state
        slot = x & (total - 1)
        symbol = int(np.searchsorted(cumulative, slot, side="right"))
        # Negative frequencies (which the encoder refuses) would make the cumulative table
        # non-monotonic; rather than pay to check them all, check what the step relies on: a
        # symbol in range whose interval holds the slot and is at most the total wide, so the
        # state stays in [1, 256 L).
        end = int(cumulative[symbol]) if symbol < len(cumulative) else -1
        frequency = int(frequencies[symbol]) if symbol < len(cumulative) else 0
        if not (1 <= frequency <= total and end - frequency <= slot < end):
            raise ValueError("frequencies must be non-negative integers")
        x = frequency * (x >> self.precision) + slot - (end - frequency)
        while x < _LOWER:
            if self._position >= len(self._data):
                raise CorruptStreamError("entropy-coded payload ends too early")
            x = (x << 8) | self._data[self._position]
            self._position += 1
        self._state = x
        return symbol

    def finish(self) -> None:
        """Check that the payload was exactly used up; raises CorruptStreamError if not."""
        if self._position != len(self._data):
            raise CorruptStreamError(f"{len(self._data) - self._position} bytes left over in the entropy-coded payload")
        if self._state != _LOWER:
            raise CorruptStreamError("entropy-coded payload does not end in the coder's initial state")


def max_symbols(num_bytes: int, vocabulary: int, precision: int = DEFAULT_PRECISION) -> int:
    """The most symbols a payload of `num_bytes` can hold when every table gives each of the
    `vocabulary` symbols at least 1 (as `quantize_probabilities` does): each symbol costs at
    least log2(T / (T - V + 1)) bits, and the coder's bytes hold 8 bits each plus its 4-byte
    state. A header that declares more is corrupt, so a decoder can refuse it before allocating."""
    total = 1 << precision
    if not 1 <= vocabulary <= total:
        raise ValueError(f"vocabulary must be in [1, 2**{precision}]")
    if vocabulary == 1:
        return 2**63 - 1  # a one-symbol alphabet costs nothing
    least_bits = math.log2(total / (total - vocabulary + 1))
    return int((8 * num_bytes + 8) / least_bits) + 1


def encode_symbols(symbols: np.ndarray, frequencies: np.ndarray, precision: int = DEFAULT_PRECISION) -> bytes:
    """Encode symbols [M] under frequencies [M, V] (from `quantize_probabilities`) into bytes."""
    encoder = RangeEncoder(precision)
    encoder.encode_many(symbols, frequencies)
    return encoder.finish()


def decode_symbols(
    data: bytes,
    num_symbols: int,
    next_frequencies: Callable[[int, list[int]], np.ndarray],
    precision: int = DEFAULT_PRECISION,
) -> np.ndarray:
    """Decode `num_symbols` symbols [M] (int64); raises CorruptStreamError on a damaged payload.

    `next_frequencies(i, decoded)` gives the frequencies [V] of symbol i, where `decoded` holds
    symbols 0 .. i-1 (the same list each call, so do not keep or change it).
    """
    decoder = RangeDecoder(data, precision)
    decoded: list[int] = []
    for index in range(num_symbols):
        decoded.append(decoder.decode(next_frequencies(index, decoded)))
    decoder.finish()
    return np.asarray(decoded, dtype=np.int64)


def ideal_bits(symbols: np.ndarray, frequencies: np.ndarray, precision: int = DEFAULT_PRECISION) -> float:
    """Information content of symbols [M] under frequencies [M, V]: sum of -log2(f / 2**precision)."""
    chosen = np.asarray(frequencies)[np.arange(len(symbols)), np.asarray(symbols)]
    return float(np.sum(precision - np.log2(chosen)))


def encode_intervals(starts: np.ndarray, frequencies: np.ndarray, precision: int = DEFAULT_PRECISION) -> bytes:
    """The payload of symbols given by their intervals (start [M], frequency [M], under tables that
    sum to 2**precision), in the format RangeDecoder reads: the same as RangeEncoder's."""
    _check_precision(precision)
    starts = np.asarray(starts, dtype=np.int64)
    frequencies = np.asarray(frequencies, dtype=np.int64)
    total = 1 << precision
    if starts.shape != frequencies.shape or starts.ndim != 1:
        raise ValueError("starts and frequencies must be vectors of the same length")
    if len(starts) and (frequencies.min() < 1 or starts.min() < 0 or (starts + frequencies).max() > total):
        raise ValueError(f"intervals must have frequency >= 1 and lie in [0, 2**{precision})")
    renorm_bits = STATE_BITS - precision + 8
    out = bytearray()
    x = _LOWER
    for start, frequency in zip(reversed(starts.tolist()), reversed(frequencies.tolist())):
        limit = frequency << renorm_bits
        while x >= limit:
            out.append(x & 0xFF)
            x >>= 8
        quotient, remainder = divmod(x, frequency)
        x = (quotient << precision) + start + remainder
    out += x.to_bytes(STATE_BYTES, "little")
    out.reverse()
    return bytes(out)


class ParallelDecoder:
    """Decodes B payloads side by side, one symbol of each per call, with numpy: the decoder of
    independently coded segments. Each payload is in RangeEncoder's format.

    Raises CorruptStreamError, and nothing else, on damaged payloads (given valid tables)."""

    def __init__(self, payloads: list[bytes], precision: int = DEFAULT_PRECISION):
        _check_precision(precision)
        self.precision = precision
        if any(len(p) < STATE_BYTES for p in payloads):
            raise CorruptStreamError(f"an entropy-coded segment is shorter than {STATE_BYTES} bytes")
        lengths = np.array([len(p) for p in payloads], dtype=np.int64)
        self._data = np.frombuffer(b"".join(payloads) + b"\0", dtype=np.uint8)
        self._end = np.cumsum(lengths)
        first = self._end - lengths
        heads = np.stack([self._data[first + i] for i in range(STATE_BYTES)], axis=1).astype(np.int64)
        self._state = (heads[:, 0] << 24) | (heads[:, 1] << 16) | (heads[:, 2] << 8) | heads[:, 3]
        if ((self._state < _LOWER) | (self._state >= _UPPER)).any():
            raise CorruptStreamError("an entropy-coded segment's initial state is out of range")
        self._position = first + STATE_BYTES

    def decode(self, starts: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        """The next symbol [B] of each payload under interval starts [B, V + 1] (increasing, 0 first,
        2**precision last); rows where `active` is False are left alone and give 0."""
        starts = np.asarray(starts, dtype=np.int64)
        mask = np.ones(len(self._state), dtype=bool) if active is None else np.asarray(active, dtype=bool)
        total = 1 << self.precision
        x = self._state
        slot = x & (total - 1)
        symbols = (starts[:, 1:] <= slot[:, None]).sum(axis=1)  # the interval that holds the slot
        rows = np.arange(len(x))
        low = starts[rows, symbols]
        frequency = starts[rows, symbols + 1] - low
        if (frequency[mask] < 1).any():
            raise ValueError("interval starts must be increasing")
        updated = frequency * (x >> self.precision) + slot - low
        x = np.where(mask, updated, x)
        for _ in range(2):  # a step takes at most 16 bits off a state of at least 23
            need = mask & (x < _LOWER)
            if not need.any():
                break
            if (self._position[need] >= self._end[need]).any():
                raise CorruptStreamError("entropy-coded payload ends too early")
            x[need] = (x[need] << 8) | self._data[self._position[need]]
            self._position[need] += 1
        self._state = x
        return np.where(mask, symbols, 0)

    def finish(self) -> None:
        """Check that every payload was exactly used up; CorruptStreamError if not."""
        if (self._position != self._end).any():
            raise CorruptStreamError("bytes left over in an entropy-coded segment")
        if (self._state != _LOWER).any():
            raise CorruptStreamError("an entropy-coded segment does not end in the coder's initial state")
