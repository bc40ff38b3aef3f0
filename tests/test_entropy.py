"""Property tests of the entropy coder: exact round trips, sizes near the ideal, damaged payloads."""

import numpy as np
import pytest
from conftest import FAST, seeds
from hypothesis import given
from hypothesis import strategies as st

from codec.entropy import (
    DEFAULT_PRECISION,
    STATE_BYTES,
    ParallelDecoder,
    RangeDecoder,
    RangeEncoder,
    decode_symbols,
    encode_intervals,
    encode_symbols,
    ideal_bits,
    max_symbols,
    quantize_probabilities,
)
from codec.errors import CorruptStreamError

KINDS = ("uniform", "softmax", "peaked", "one_hot", "sparse", "dirichlet")


def random_probs(rng: np.random.Generator, rows: int, vocabulary: int, kind: str) -> np.ndarray:
    """Probabilities [rows, V] (float32, as a model gives them) of one family of shapes."""
    if kind == "uniform":
        return np.full((rows, vocabulary), 1 / vocabulary, dtype=np.float32)
    if kind == "softmax":
        logits = rng.normal(0, rng.uniform(0.1, 8), (rows, vocabulary))
    elif kind == "peaked":  # a softmax whose top symbol has nearly all the mass
        logits = rng.normal(0, 1, (rows, vocabulary))
        logits[np.arange(rows), rng.integers(0, vocabulary, rows)] += 40
    elif kind == "one_hot":  # exact zeros everywhere else
        probs = np.zeros((rows, vocabulary), dtype=np.float32)
        probs[np.arange(rows), rng.integers(0, vocabulary, rows)] = 1
        return probs
    elif kind == "sparse":  # a few symbols, and underflowed exact zeros elsewhere
        logits = np.where(rng.random((rows, vocabulary)) < 0.05, rng.normal(0, 2, (rows, vocabulary)), -200.0)
    else:
        return rng.dirichlet(np.full(vocabulary, 0.05), rows).astype(np.float32)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits).astype(np.float32)
    return probs / probs.sum(axis=1, keepdims=True)


def random_symbols(rng: np.random.Generator, probs: np.ndarray, adversarial: bool) -> np.ndarray:
    """Symbols [rows]: drawn from the rows of probs, or uniformly (often very improbable ones)."""
    rows, vocabulary = probs.shape
    if adversarial:
        return rng.integers(0, vocabulary, rows)
    cdf = np.cumsum(probs.astype(np.float64), axis=1)
    return np.minimum((cdf < rng.random((rows, 1)) * cdf[:, -1:]).sum(axis=1), vocabulary - 1)


@st.composite
def streams(draw, max_length=2000, max_vocabulary=4096):
    """(symbols [M], frequencies [M, V], precision) with a new distribution for every symbol."""
    rng = np.random.default_rng(draw(seeds))
    vocabulary = draw(st.integers(2, max_vocabulary))
    length = draw(st.integers(0, max_length))
    length = min(length, 4_000_000 // vocabulary)  # bounds the [M, V] arrays so the tests stay fast
    precision = draw(st.integers(max(1, (vocabulary - 1).bit_length()), 16))
    probs = random_probs(rng, length, vocabulary, draw(st.sampled_from(KINDS)))
    symbols = random_symbols(rng, probs, draw(st.booleans()))
    return symbols, quantize_probabilities(probs, precision), precision


@FAST
@given(streams())
def test_round_trip_with_a_new_distribution_per_symbol(stream):
    symbols, frequencies, precision = stream
    data = encode_symbols(symbols, frequencies, precision)
    seen = []

    def next_frequencies(index, decoded):
        assert decoded == symbols[:index].tolist()  # the decoder only ever sees the past
        seen.append(index)
        return frequencies[index]

    decoded = decode_symbols(data, len(symbols), next_frequencies, precision)
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, symbols)
    assert seen == list(range(len(symbols)))


@FAST
@given(seeds, st.integers(2, 4096), st.integers(0, 2000), st.sampled_from(KINDS), st.booleans())
def test_round_trip_with_one_fixed_distribution(seed, vocabulary, length, kind, adversarial):
    rng = np.random.default_rng(seed)
    probs = random_probs(rng, 1, vocabulary, kind)
    frequencies = quantize_probabilities(probs[0])
    symbols = random_symbols(rng, np.repeat(probs, length, axis=0), adversarial)
    data = encode_symbols(symbols, np.broadcast_to(frequencies, (length, vocabulary)))
    decoder = RangeDecoder(data)
    decoded = [decoder.decode(frequencies) for _ in range(length)]
    decoder.finish()
    assert decoded == symbols.tolist()


@FAST
@given(seeds, st.integers(2, 300), st.integers(0, 400))
def test_round_trip_driven_by_an_autoregressive_model(seed, vocabulary, length):
    """The real use: each distribution depends on the symbols before it (here a Markov chain)."""
    rng = np.random.default_rng(seed)
    transitions = random_probs(rng, vocabulary + 1, vocabulary, "dirichlet")  # last row: the start

    def model(previous: list[int]) -> np.ndarray:
        return transitions[previous[-1] if previous else vocabulary]

    symbols: list[int] = []
    encoder = RangeEncoder()
    for _ in range(length):
        probs = model(symbols)
        symbol = int(rng.choice(vocabulary, p=probs.astype(np.float64) / probs.sum(dtype=np.float64)))
        encoder.encode(symbol, quantize_probabilities(probs))
        symbols.append(symbol)
    data = encoder.finish()
    decoded = decode_symbols(data, length, lambda _, previous: quantize_probabilities(model(previous)))
    assert decoded.tolist() == symbols


@FAST
@given(streams(max_length=300, max_vocabulary=600))
def test_encode_one_at_a_time_equals_encode_many(stream):
    symbols, frequencies, precision = stream
    encoder = RangeEncoder(precision)
    for symbol, row in zip(symbols, frequencies):
        encoder.encode(int(symbol), row)
    assert encoder.finish() == encode_symbols(symbols, frequencies, precision)


@FAST
@given(streams())
def test_size_is_close_to_the_information_content(stream):
    symbols, frequencies, precision = stream
    data = encode_symbols(symbols, frequencies, precision)
    ideal_bytes = ideal_bits(symbols, frequencies, precision) / 8
    # The 4-byte final state, a fraction of a byte of padding, and a coding loss far below 0.1%.
    assert len(data) <= ideal_bytes * 1.001 + STATE_BYTES + 1
    assert len(data) >= ideal_bytes - 1  # no coder beats the information content


def test_certain_symbols_cost_nothing():
    frequencies = np.zeros(8, dtype=np.int64)
    frequencies[3] = 2**16
    data = encode_symbols(np.array([], dtype=np.int64), np.zeros((0, 5), dtype=np.int64))
    assert len(data) == STATE_BYTES
    assert encode_symbols(np.full(10_000, 3), np.tile(frequencies, (10_000, 1))) == data
    assert decode_symbols(data, 0, lambda i, d: None).shape == (0,)


# quantize_probabilities


@FAST
@given(seeds, st.integers(1, 4096), st.integers(1, 40), st.sampled_from(KINDS), st.integers(12, 16))
def test_quantize_sums_exactly_and_gives_every_symbol_a_frequency(seed, vocabulary, rows, kind, precision):
    rng = np.random.default_rng(seed)
    probs = random_probs(rng, rows, vocabulary, kind)
    frequencies = quantize_probabilities(probs, precision)
    assert frequencies.dtype == np.int64 and frequencies.shape == probs.shape
    assert (frequencies.sum(axis=1) == 2**precision).all()
    assert frequencies.min() >= 1
    # Each share is within one count of the ideal split of 2**precision - V by probability.
    share = probs.astype(np.float64) / probs.astype(np.float64).sum(axis=1, keepdims=True)
    assert np.abs(frequencies - 1 - share * (2**precision - vocabulary)).max() < 1 + 1e-3


@FAST
@given(seeds, st.integers(1, 2000), st.integers(1, 200), st.sampled_from(KINDS))
def test_quantize_is_deterministic_and_independent_of_the_batch(seed, vocabulary, rows, kind):
    probs = random_probs(np.random.default_rng(seed), rows, vocabulary, kind)
    batch = quantize_probabilities(probs)
    np.testing.assert_array_equal(batch, quantize_probabilities(probs.copy()))
    for index in range(0, rows, 17):
        np.testing.assert_array_equal(batch[index], quantize_probabilities(probs[index]))
    np.testing.assert_array_equal(batch, quantize_probabilities(probs.astype(np.float64)))
    np.testing.assert_array_equal(batch, quantize_probabilities(probs * np.float32(8)))  # unnormalised


def test_quantize_treats_broken_rows_as_uniform_and_clamps_negatives():
    vocabulary = 1000
    uniform = quantize_probabilities(np.ones(vocabulary))
    assert uniform.max() - uniform.min() <= 1
    broken = np.random.default_rng(0).uniform(0.5, 1, (6, vocabulary))
    broken[0] = 0
    broken[1, 5] = np.nan
    broken[2, 7] = np.inf
    broken[3] = -1
    broken[4, :500] = -3  # negatives count as zero
    broken[5, 9] = -np.inf
    frequencies = quantize_probabilities(broken)
    for row in range(4):
        np.testing.assert_array_equal(frequencies[row], uniform)
    assert (frequencies[4, :500] == 1).all() and frequencies[4, 500:].min() > 1
    assert frequencies[5, 9] == 1
    assert frequencies.sum(axis=1).tolist() == [2**16] * 6
    assert quantize_probabilities(np.array([1e-300, 0.0, 5e-324])).sum() == 2**16  # tiny but positive
    huge = np.full((2, 3), np.finfo(np.float64).max)  # whose sum would overflow
    np.testing.assert_array_equal(quantize_probabilities(huge), quantize_probabilities(np.ones((2, 3))))


def test_quantize_rejects_bad_arguments():
    with pytest.raises(ValueError):
        quantize_probabilities(np.ones(5), precision=2)  # 5 symbols cannot all have >= 1 out of 4
    with pytest.raises(ValueError):
        quantize_probabilities(np.ones(5), precision=17)
    with pytest.raises(ValueError):
        quantize_probabilities(np.ones((2, 3, 4)))
    with pytest.raises(ValueError):
        quantize_probabilities(np.ones((3, 0)))
    assert quantize_probabilities(np.ones(4), precision=2).tolist() == [1, 1, 1, 1]


# damaged payloads


def decode_or_corrupt(data: bytes, frequencies: np.ndarray, precision: int = 16) -> list[int] | None:
    """The decoded symbols, or None if the decoder reported damage; any other exception fails."""
    try:
        decoder = RangeDecoder(data, precision)
        symbols = [decoder.decode(row) for row in frequencies]
        assert all(0 <= symbol < frequencies.shape[1] for symbol in symbols)
        decoder.finish()
    except CorruptStreamError:
        return None
    return symbols


@FAST
@given(seeds, st.binary(max_size=300), st.integers(0, 500), st.sampled_from(KINDS))
def test_arbitrary_bytes_raise_only_corrupt_stream_error(seed, data, length, kind):
    rng = np.random.default_rng(seed)
    vocabulary = int(rng.integers(2, 1025))
    frequencies = quantize_probabilities(random_probs(rng, length, vocabulary, kind))
    decode_or_corrupt(data, frequencies)


@FAST
@given(streams(max_length=500, max_vocabulary=1024), st.data())
def test_damaged_payloads_are_reported_or_decode_to_other_symbols(stream, data):
    """rANS is a bijection between payloads and symbol sequences: damage is never silent."""
    symbols, frequencies, precision = stream
    payload = encode_symbols(symbols, frequencies, precision)
    damage = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if damage == "flip":
        position = data.draw(st.integers(0, len(payload) - 1))
        bit = data.draw(st.integers(0, 7))
        damaged = payload[:position] + bytes([payload[position] ^ (1 << bit)]) + payload[position + 1 :]
    elif damage == "truncate":
        damaged = payload[: data.draw(st.integers(0, len(payload) - 1))]
    else:
        damaged = payload + data.draw(st.binary(min_size=1, max_size=8))
    assert decode_or_corrupt(damaged, frequencies, precision) != symbols.tolist()


def test_finish_detects_nearly_all_damage():
    rng = np.random.default_rng(0)
    probs = random_probs(rng, 300, 1024, "softmax")
    frequencies = quantize_probabilities(probs)
    payload = encode_symbols(random_symbols(rng, probs, False), frequencies)
    reported = 0
    for _ in range(200):
        damaged = bytearray(payload)
        damaged[rng.integers(len(damaged))] ^= 1 << rng.integers(8)
        reported += decode_or_corrupt(bytes(damaged), frequencies) is None
    assert reported == 200
    for _ in range(200):
        assert decode_or_corrupt(rng.bytes(len(payload)), frequencies) is None


def test_misuse_raises_value_error():
    frequencies = quantize_probabilities(np.ones(4))
    encoder = RangeEncoder()
    with pytest.raises(ValueError):
        encoder.encode(4, frequencies)
    with pytest.raises(ValueError):
        encoder.encode(0, frequencies * 2)  # does not sum to 2**16
    with pytest.raises(ValueError):
        encoder.encode(0, frequencies.astype(np.float64))
    with pytest.raises(ValueError):
        encoder.encode(1, np.array([2**16, 0, 0, 0]))  # frequency 0
    with pytest.raises(ValueError):
        encoder.encode(0, np.array([2**16 + 1, -1, 0, 0]))
    encoder.finish()
    with pytest.raises(ValueError):
        encoder.finish()
    decoder = RangeDecoder(encode_symbols([0], frequencies[None]))
    with pytest.raises(ValueError):
        decoder.decode(frequencies[:3])
    with pytest.raises(ValueError):
        decoder.decode(np.array([2**16 + 1, -1, 0, 0]))
    with pytest.raises(ValueError):
        decoder.decode(frequencies.astype(np.float64))
    with pytest.raises(ValueError):
        decoder.decode(frequencies[None])
    assert decoder.decode(frequencies) == 0
    decoder.finish()
    with pytest.raises(CorruptStreamError):
        RangeDecoder(b"\x00\x80\x00")
    with pytest.raises(CorruptStreamError):
        RangeDecoder(b"\x80\x00\x00\x00")  # initial state out of range


@pytest.mark.parametrize("vocabulary", [2, 64, 1024])
def test_max_symbols_bounds_the_most_compressible_streams(vocabulary):
    """Every symbol at the largest frequency a table allows: the payload is as small as any can
    be for its count, and max_symbols still admits that count (and not much more)."""
    total = 1 << DEFAULT_PRECISION
    row = np.ones(vocabulary, dtype=np.int64)
    row[0] = total - vocabulary + 1
    for count in (1, 1000, 50_000):
        payload = encode_symbols(np.zeros(count, dtype=np.int64), np.tile(row, (count, 1)))
        assert count <= max_symbols(len(payload), vocabulary) <= 1.2 * count + 8 * 64 / np.log2(total / row[0])


# interval coding and the parallel decoder of segments


def intervals_of(symbols: np.ndarray, frequencies: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, frequency) of each symbol and the interval starts [M, V + 1] of each row."""
    starts = np.zeros((len(frequencies), frequencies.shape[1] + 1), dtype=np.int64)
    starts[:, 1:] = np.cumsum(frequencies, axis=1)
    rows = np.arange(len(symbols))
    return starts[rows, symbols], frequencies[rows, symbols], starts


@FAST
@given(seeds, st.integers(1, 6), st.integers(0, 80), st.sampled_from(KINDS))
def test_interval_coding_matches_the_range_coder_and_decodes_side_by_side(seed, streams, length, kind):
    rng = np.random.default_rng(seed)
    vocabulary = int(rng.integers(2, 1025))
    lengths = rng.integers(0, length + 1, streams)
    lengths[0] = length  # the longest stream sets the number of steps
    payloads, tables, symbol_rows = [], [], []
    for count in lengths:
        frequencies = quantize_probabilities(random_probs(rng, length, vocabulary, kind))
        symbols = np.array([rng.choice(vocabulary, p=row / row.sum()) for row in frequencies], dtype=np.int64)
        low, width, starts = intervals_of(symbols[:count], frequencies[:count])
        payload = encode_intervals(low, width)
        assert payload == encode_symbols(symbols[:count], frequencies[:count])  # the same format
        payloads.append(payload)
        tables.append(starts if count else np.zeros((0, vocabulary + 1), dtype=np.int64))
        symbol_rows.append(symbols[:count])
    decoder = ParallelDecoder(payloads)
    for step in range(length):
        active = lengths > step
        idle = np.r_[0, np.full(vocabulary, 1 << 16)]  # any table: finished streams ignore it
        starts = np.stack([t[step] if a else idle for t, a in zip(tables, active)])
        decoded = decoder.decode(starts, active)
        for index in np.flatnonzero(active):
            assert decoded[index] == symbol_rows[index][step]
    decoder.finish()


def test_parallel_decoder_rejects_damaged_and_short_segments():
    frequencies = quantize_probabilities(np.ones((20, 5)))
    low, width, starts = intervals_of(np.arange(20) % 5, frequencies)
    payload = encode_intervals(low, width)
    with pytest.raises(CorruptStreamError):
        ParallelDecoder([payload, b"\x00\x80"])
    with pytest.raises(CorruptStreamError):
        decoder = ParallelDecoder([payload + b"\x00"])
        for row in starts:
            decoder.decode(row[None])
        decoder.finish()
    with pytest.raises(CorruptStreamError):
        decoder = ParallelDecoder([payload[:-1]])
        for row in starts:
            decoder.decode(row[None])
        decoder.finish()
    with pytest.raises(ValueError):
        encode_intervals(np.array([0]), np.array([0]))
