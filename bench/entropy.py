"""Speed and size overhead of the entropy coder (codec.entropy) on random distributions.

    python -m bench.entropy [--symbols 50000] [--vocabulary 1024] [--seed 0]

Prints rows/s of quantizing probabilities (a batch [M, V] and one row [V] at a time), symbols/s
of encoding (all at once and one per call) and of decoding (one per call, as a decoder driven by
a model must), in wall and CPU time (the latter steadier on a busy machine), and the payload's
size beside the ideal under the integer frequencies and under the float probabilities.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from codec.entropy import RangeEncoder, decode_symbols, encode_symbols, ideal_bits, quantize_probabilities


def _timed(fn):
    """fn's result, wall seconds and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_entropy(num_symbols: int, vocabulary: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (num_symbols, vocabulary)).astype(np.float32)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    symbols = (probs.cumsum(1) < rng.random((num_symbols, 1))).sum(1).clip(0, vocabulary - 1)
    rows = min(num_symbols, 2000)

    quantize_probabilities(probs[:rows])  # warm-up
    frequencies, *batch_times = _timed(lambda: quantize_probabilities(probs))
    _, *single_times = _timed(lambda: [quantize_probabilities(row) for row in probs[:rows]])
    data, *encode_times = _timed(lambda: encode_symbols(symbols, frequencies))

    def encode_one_by_one():
        encoder = RangeEncoder()
        for symbol, row in zip(symbols.tolist(), frequencies):
            encoder.encode(symbol, row)
        return encoder.finish()

    data_one_by_one, *encode_one_times = _timed(encode_one_by_one)
    assert data_one_by_one == data
    decoded, *decode_times = _timed(lambda: decode_symbols(data, num_symbols, lambda i, _: frequencies[i]))
    assert np.array_equal(decoded, symbols)

    def rates(count, times):
        return f"{count / times[0]:>9,.0f}/s wall, {count / times[1]:>9,.0f}/s CPU"

    ideal = ideal_bits(symbols, frequencies) / 8
    model = float(-np.log2(probs[np.arange(num_symbols), symbols]).sum()) / 8
    print(f"{num_symbols} symbols, V = {vocabulary}, {ideal * 8 / num_symbols:.2f} bits/symbol")
    print(f"quantize [M, V]: {rates(num_symbols, batch_times)} rows")
    print(f"quantize [V]:    {rates(rows, single_times)} rows")
    print(f"encode [M]:      {rates(num_symbols, encode_times)} symbols (frequencies given)")
    print(f"encode one:      {rates(num_symbols, encode_one_times)} symbols (frequencies given, one row per call)")
    print(f"decode:          {rates(num_symbols, decode_times)} symbols (frequencies given, one row per call)")
    print(
        f"size: {len(data)} bytes; ideal under the frequencies {ideal:.1f} "
        f"(+{len(data) - ideal:.1f}, {100 * (len(data) / ideal - 1):+.3f}%); "
        f"under the float probabilities {model:.1f} ({100 * (len(data) / model - 1):+.3f}%)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50_000)
    parser.add_argument("--vocabulary", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    bench_entropy(args.symbols, args.vocabulary, args.seed)


if __name__ == "__main__":
    main()
