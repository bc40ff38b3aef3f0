"""Benchmark of the prior: entropy coding and sampling speed, and file sizes on held-out speech.

    python -m bench.prior --threads 2 [--prior PATH] [--tokens DIR ...] [--bitrates 1.5,3,6]

Speeds are real-time factors (seconds of audio per second of compute) on real codes: a 10 s clip
and a 10-minute file cut from the first --tokens folder (`codec tokenize` output), at each
bitrate; sampling of 10 s for 1 and 8 streams. Sizes: the entropy-coded payload against the
bit-packed one, pooled over every file of each --tokens folder, per bitrate (the container's
header is the same for both). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from codec.api import Codec
from codec.bitstream import packed_size
from codec.prior_api import TokenPrior
from codec.tokenize import load_tokens


def _timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def coding_speed(prior: TokenPrior, codes: torch.Tensor, label: str) -> None:
    seconds = codes.shape[-1] / prior.frame_rate
    payload, encode = _timed(lambda: prior.entropy_encode(codes))
    decoded, decode = _timed(lambda: prior.entropy_decode(payload, codes.shape[1], codes.shape[2]))
    assert torch.equal(decoded, codes), "entropy coding did not round-trip"
    print(
        f"{label:<26}{codes.shape[1]:>7}{seconds / encode:>12.1f}{seconds / decode:>12.1f}"
        f"{8 * len(payload) / seconds / 1000:>12.2f}"
    )


def sampling_speed(prior: TokenPrior, levels: int, streams: int, seconds: float = 10.0) -> None:
    _, elapsed = _timed(lambda: prior.sample(seconds, top_k=50, seed=0, num_levels=levels, streams=streams))
    print(f"sample {streams} stream(s), {levels:>2} levels: {seconds * streams / elapsed:.1f}x real time in all")


def sizes(prior: TokenPrior, folder: str, levels_list: list[int], bits: int) -> None:
    files = [codes[None] for codes in load_tokens(folder) if codes.shape[-1] > 0]
    frames = sum(c.shape[-1] for c in files)
    for levels in levels_list:
        packed = sum(packed_size(levels * c.shape[-1], bits) for c in files)
        coded = sum(len(prior.entropy_encode(c[:, :levels])) for c in files)
        print(
            f"{folder:<28}{levels:>7}{len(files):>7}{frames / prior.frame_rate / 60:>9.1f}"
            f"{packed / 1024:>11.0f}{coded / 1024:>11.0f}{100 * (1 - coded / packed):>11.1f}%"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prior", default=None, help="prior checkpoint (default: the bundled one)")
    parser.add_argument("--checkpoint", default=None, help="codec checkpoint (default: the bundled one)")
    parser.add_argument("--tokens", action="append", default=[], help="codec tokenize output folder(s)")
    parser.add_argument("--bitrates", default="1.5,3,6")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prior, codec = TokenPrior.load(args.prior), Codec.load(args.checkpoint)
    levels_list = [codec.num_levels(float(b)) for b in args.bitrates.split(",")]
    size = sum(t.numel() for t in prior.model.state_dict().values())
    print(f"prior {prior.model_id}: {size / 1e6:.2f}M integer weights; {args.threads} threads")
    if not args.tokens:
        raise SystemExit("give --tokens (codec tokenize output) to time real codes and measure sizes")
    stream = torch.cat([c for c in load_tokens(args.tokens[0]) if c.shape[-1] > 0], dim=-1)[None]
    ten_s, ten_min = int(10 * prior.frame_rate), int(600 * prior.frame_rate)
    if stream.shape[-1] < ten_min:
        raise SystemExit(f"{args.tokens[0]} holds less than 10 minutes of tokens")
    prior.entropy_encode(stream[:, :2, :50])  # warm-up
    print(f"{'entropy coding':<26}{'levels':>7}{'encode':>12}{'decode':>12}{'kbps':>12}")
    for levels in levels_list:
        coding_speed(prior, stream[:, :levels, :ten_s], "10 s clip")
        coding_speed(prior, stream[:, :levels, :ten_min], "10-minute file")
    for levels in levels_list:
        for streams in (1, 8):
            sampling_speed(prior, levels, streams)
    bits = (codec.config.quantizer.codebook_size - 1).bit_length()
    print(f"{'sizes':<28}{'levels':>7}{'files':>7}{'minutes':>9}{'packed KiB':>11}{'coded KiB':>11}{'smaller':>12}")
    for folder in args.tokens:
        sizes(prior, folder, levels_list, bits)


if __name__ == "__main__":
    main()
