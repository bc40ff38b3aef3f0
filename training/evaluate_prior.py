"""What the token prior buys on held-out audio: cross-entropy, and entropy-coded vs packed file sizes.

    python -m training.evaluate_prior --manifest data/corpus/manifest.jsonl --split val --kind speech \\
        [--codec CODEC.safetensors] [--prior PRIOR.safetensors] [--bitrates 1.5,3,6] \\
        [--max-minutes 20] [--coding-minutes 3] [--out docs/eval]

For every bitrate setting it encodes the files with the codec and reports:
- the prior's cross-entropy on their codes, in bits per token (teacher-forced, every file);
- on the first --coding-minutes of those files, the real files `codec encode` writes with and
  without `--entropy`: payload bytes and whole-file bytes (header included), the reduction, and
  whether decoding every entropy-coded file gave back exactly the packed codes;
- entropy encoding and decoding speed as multiples of real time.
Writes prior.csv to --out and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from codec import bitstream
from codec.api import Codec
from codec.prior_api import TokenPrior
from training.data import read_manifest
from training.evaluate import load_audio


def evaluate(
    codec: Codec, prior: TokenPrior, paths: list[str], bitrates: list[float], coding_seconds: float
) -> list[dict]:
    audio = [torch.from_numpy(load_audio(p)) for p in tqdm(paths, desc="loading", unit="file")]
    rows = []
    for kbps in bitrates:
        levels = codec.num_levels(kbps)
        seconds = bits = tokens = 0.0
        coded = {
            "files": 0,
            "seconds": 0.0,
            "packed_payload": 0,
            "entropy_payload": 0,
            "packed_file": 0,
            "entropy_file": 0,
            "exact": 0,
            "encode_s": 0.0,
            "decode_s": 0.0,
        }
        for wav in tqdm(audio, desc=f"{kbps:g} kbps", unit="file"):
            encoded = codec.encode(wav[None], codec.sample_rate, bitrate=kbps)
            codes = encoded.codes  # [1, K, N]
            duration = wav.shape[-1] / codec.sample_rate
            seconds += duration
            tokens += codes.numel()
            bits += prior.cross_entropy(codes) * codes.numel()
            if coded["seconds"] >= coding_seconds:
                continue
            packed = codec.to_bytes(encoded)
            start = time.perf_counter()
            entropy_file = codec.to_bytes(encoded, prior)
            middle = time.perf_counter()
            decoded = codec.from_bytes(entropy_file, prior).codes
            payload = bitstream.read_stream(entropy_file).payload
            coded["decode_s"] += time.perf_counter() - middle
            coded["encode_s"] += middle - start
            coded["files"] += 1
            coded["seconds"] += duration
            coded["packed_payload"] += codec.header(encoded).packed_size
            coded["entropy_payload"] += len(payload)
            coded["packed_file"] += len(packed)
            coded["entropy_file"] += len(entropy_file)
            coded["exact"] += bool(torch.equal(decoded, codes))
        rows.append(
            {
                "kbps": kbps,
                "levels": levels,
                "minutes": seconds / 60,
                "bits_per_token": bits / tokens,
                "prior_kbps": bits / seconds / 1000,
                "coded_files": coded["files"],
                "coded_minutes": coded["seconds"] / 60,
                "packed_payload_bytes": coded["packed_payload"],
                "entropy_payload_bytes": coded["entropy_payload"],
                "payload_reduction": 1 - coded["entropy_payload"] / max(coded["packed_payload"], 1),
                "packed_file_bytes": coded["packed_file"],
                "entropy_file_bytes": coded["entropy_file"],
                "file_reduction": 1 - coded["entropy_file"] / max(coded["packed_file"], 1),
                "exact_files": coded["exact"],
                "encode_x_realtime": coded["seconds"] / max(coded["encode_s"], 1e-9),
                "decode_x_realtime": coded["seconds"] / max(coded["decode_s"], 1e-9),
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'kbps':>5} {'levels':>6} {'bits/token':>10} {'prior kbps':>10} | {'files':>5} {'min':>5} "
        f"{'packed B':>9} {'entropy B':>9} {'payload':>8} {'file':>7} {'exact':>7} {'enc xRT':>7} {'dec xRT':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['kbps']:>5g} {r['levels']:>6} {r['bits_per_token']:>10.3f} {r['prior_kbps']:>10.3f} | "
            f"{r['coded_files']:>5} {r['coded_minutes']:>5.2f} "
            f"{r['packed_file_bytes']:>9} {r['entropy_file_bytes']:>9} "
            f"{-100 * r['payload_reduction']:>7.1f}% {-100 * r['file_reduction']:>6.1f}% "
            f"{r['exact_files']:>3}/{r['coded_files']:<3} {r['encode_x_realtime']:>7.1f} {r['decode_x_realtime']:>7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--kind", action="append", help="manifest kind; repeatable (default: all)")
    parser.add_argument("--codec", help="codec checkpoint; default: the bundled model")
    parser.add_argument("--prior", help="prior checkpoint; default: the bundled prior")
    parser.add_argument("--bitrates", type=lambda s: [float(x) for x in s.split(",")], default=[1.5, 3.0, 6.0])
    parser.add_argument("--max-minutes", type=float, default=20.0, help="held-out audio scored for cross-entropy")
    parser.add_argument("--coding-minutes", type=float, default=3.0, help="of which this much is entropy coded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=2, help="for the codec and cross-entropy (coding runs one thread wide)"
    )
    parser.add_argument("--out", default="docs/eval")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    codec, prior = Codec.load(args.codec), TokenPrior.load(args.prior)
    if reason := prior.mismatch(codec):
        raise SystemExit(reason)
    clips = read_manifest(args.manifest, args.split, tuple(args.kind) if args.kind else None)
    random.Random(args.seed).shuffle(clips)
    paths, total = [], 0.0
    for clip in clips:
        if total >= args.max_minutes * 60:
            break
        paths.append(clip.path)
        total += clip.duration
    rows = evaluate(codec, prior, paths, args.bitrates, args.coding_minutes * 60)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "prior.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    print(
        f"codec {codec.model_id}, prior {prior.model_id}; {len(paths)} files, {total / 60:.2f} minutes of "
        f"{args.split} audio; packed/entropy bytes are whole files (header included) over the coded part"
    )
    print(format_table(rows))
    print(f"wrote {out / 'prior.csv'}")


if __name__ == "__main__":
    main()
