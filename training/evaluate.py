"""Compare our codec with Opus and Codec2 on real audio: bitrate charged vs objective quality.

    python -m training.evaluate --manifest data/corpus/manifest.jsonl --split val --kind speech \\
        --checkpoint runs/codec/best.safetensors [--bitrates 1,1.5,3,6] [--max-minutes 20] [--jobs 2]
    python -m training.evaluate --folder my_clips/ --out docs/eval

Every system is charged the size of the file it writes (ours: the codec.bitstream file, header
included; Opus: the Ogg file; Codec2: the .c2 file). Each system's delay (ours: 0 by construction;
the others: measured once on the first files, training.metrics.system_delay) is removed from all
its outputs before they are scored at 16 kHz with PESQ-WB, STOI, SI-SDR and a log-mel distance.
Writes per_file.csv, summary.csv, usage.csv (our codebook usage per level over the scored files and,
with --usage-whole-split, over the whole split),
rate_distortion.png and spectrograms.png to --out and prints the summary. Files are taken in a seeded random order, so a --max-minutes subset mixes sources.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from tqdm import tqdm

from codec import Codec
from codec.prior_api import TokenPrior
from codec.usage import LevelUsage, codebook_usage
from training import plots
from training.baselines import SAMPLE_RATE, System, build_systems
from training.data import read_manifest
from training.metrics import score, shift, system_delay

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
MIN_SECONDS = 0.1  # the log-mel distance needs more than one 1024-point frame


@dataclass(frozen=True)
class AudioFile:
    path: str
    name: str  # shown in tables and figures
    seconds: float


@dataclass
class Row:
    """One file through one system."""

    file: str
    seconds: float
    family: str
    setting: str
    bytes: int
    kbps: float  # charged: bytes * 8 / seconds
    payload_kbps: float  # the coded frames alone, without file header or container
    lag_ms: float  # the system's delay, removed before scoring; > 0: its output is late
    pesq_wb: float | None
    stoi: float | None
    si_sdr: float
    mel_distance: float
    bandwidth: str  # Opus: packets per mode and coded bandwidth
    codec_s: float  # encode + decode time
    score_s: float


@dataclass
class FileResult:
    rows: list[Row]
    bandwidths: dict[str, Counter]  # system name -> Opus packets per mode and bandwidth


def manifest_files(manifest: str, split: str, kinds: tuple[str, ...] | None = None) -> list[AudioFile]:
    """The manifest's files of this split (and these kinds; None: every kind), in manifest order."""
    root = Path(manifest).parent
    return [AudioFile(c.path, os.path.relpath(c.path, root), c.duration) for c in read_manifest(manifest, split, kinds)]


def list_files(args: argparse.Namespace) -> list[AudioFile]:
    if args.manifest:
        files = manifest_files(args.manifest, args.split, tuple(args.kind) if args.kind else None)
    else:
        folder = Path(args.folder)
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        files = [AudioFile(str(p), str(p.relative_to(folder)), sf.info(str(p)).duration) for p in paths]
    random.Random(args.seed).shuffle(files)
    chosen, total = [], 0.0
    for file in files:
        if args.max_files and len(chosen) >= args.max_files:
            break
        if args.max_minutes and total >= args.max_minutes * 60:
            break
        if file.seconds < MIN_SECONDS:
            print(f"warning: {file.name} is shorter than {MIN_SECONDS} s; skipped", file=sys.stderr)
            continue
        chosen.append(file)
        total += file.seconds
    return chosen


def load_audio(path: str) -> np.ndarray:
    """Any soundfile-readable file -> mono float32 [T] at 16 kHz."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = AF.resample(torch.from_numpy(audio), rate, SAMPLE_RATE).numpy()
    return np.ascontiguousarray(audio, dtype=np.float32)


def bandwidth_note(counts: Counter) -> str:
    total = sum(counts.values())
    return ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in counts.most_common()) if total else ""


def calibrate_delays(systems: list[System], files: list[AudioFile], max_lag_s: float) -> dict[str, int]:
    """Each system's delay in samples: its own where known by construction, else measured on
    these files."""
    references = [load_audio(f.path) for f in files]
    max_lag = int(round(max_lag_s * SAMPLE_RATE))
    return {s.name: s.delay if s.delay is not None else system_delay([(r, s.run(r).audio) for r in references], max_lag)
            for s in tqdm(systems, desc="measuring delays", unit="system")}


def evaluate_file(systems: list[System], file: AudioFile, delays: dict[str, int]) -> FileResult:
    reference = load_audio(file.path)
    seconds = len(reference) / SAMPLE_RATE
    rows, bandwidths = [], {}
    for system in systems:
        start = time.perf_counter()
        output = system.run(reference)
        middle = time.perf_counter()
        lag = delays[system.name]
        aligned = shift(output.audio, lag, len(reference))
        scores = score(reference, aligned)
        kbps = output.num_bytes * 8 / seconds / 1000
        rows.append(Row(
            file.name, seconds, system.family, system.setting, output.num_bytes, kbps,
            output.payload_bps / 1000, 1000 * lag / SAMPLE_RATE,
            scores.pesq_wb, scores.stoi, scores.si_sdr, scores.mel_distance, bandwidth_note(output.bandwidths),
            middle - start, time.perf_counter() - middle,
        ))
        bandwidths[system.name] = output.bandwidths
    return FileResult(rows, bandwidths)


# Worker processes build their own systems once (a model per process), then take files.
_worker_systems: list[System] = []


def _init_worker(checkpoint: str | None, bitrates: list[float], baselines: bool, use_codec: bool,
                 threads: int, entropy_bitrates: list[float] = (), prior_checkpoint: str | None = None,
                 pitch_bitrates: list[float] = ()) -> None:
    global _worker_systems
    torch.set_num_threads(threads)
    codec = Codec.load(checkpoint) if use_codec else None
    needs_prior = (entropy_bitrates or pitch_bitrates) and codec is not None
    prior = load_prior(prior_checkpoint, codec) if needs_prior else None
    _worker_systems = build_systems(codec, bitrates, baselines, warn=lambda *_: None,
                                    entropy_bitrates=entropy_bitrates, prior=prior, pitch_bitrates=pitch_bitrates)


def load_prior(path: str | None, codec: Codec) -> TokenPrior:
    """The prior for entropy-coded systems; it must model this codec's tokens."""
    prior = TokenPrior.load(path)
    if reason := prior.mismatch(codec):
        raise SystemExit(reason)
    return prior


def _evaluate_in_worker(file: AudioFile, delays: dict[str, int]) -> FileResult:
    return evaluate_file(_worker_systems, file, delays)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(results: list[FileResult]) -> list[dict]:
    """One row per system, in the order systems first appear."""
    rows = [row for result in results for row in result.rows]
    summary = []
    for family, setting in dict.fromkeys((r.family, r.setting) for r in rows):
        group = [r for r in rows if (r.family, r.setting) == (family, setting)]
        seconds = sum(r.seconds for r in group)
        bandwidths = sum((result.bandwidths.get(f"{family} {setting}", Counter()) for result in results), Counter())
        summary.append({
            "family": family, "setting": setting, "files": len(group), "minutes": seconds / 60,
            "kbps": sum(r.bytes for r in group) * 8 / seconds / 1000,
            "payload_kbps": sum(r.payload_kbps * r.seconds for r in group) / seconds,
            "pesq_wb": _mean([r.pesq_wb for r in group]),
            "pesq_skipped": sum(r.pesq_wb is None for r in group),
            "stoi": _mean([r.stoi for r in group]),
            "stoi_skipped": sum(r.stoi is None for r in group),
            "si_sdr": _mean([r.si_sdr for r in group]),
            "mel_distance": _mean([r.mel_distance for r in group]),
            "lag_ms": statistics.median(r.lag_ms for r in group),
            "bandwidth": bandwidth_note(bandwidths),
            "codec_s": sum(r.codec_s for r in group), "score_s": sum(r.score_s for r in group),
        })
    return summary


def format_table(summary: list[dict]) -> str:
    def num(value, spec):
        return "-" if value is None else format(value, spec)

    header = f"{'codec':<7} {'setting':<10} {'kbps':>6} {'payload':>7} {'PESQ-WB':>7} {'STOI':>6} " \
             f"{'SI-SDR':>7} {'mel':>6} {'lag ms':>7}  note"
    lines = [header, "-" * len(header)]
    for s in summary:
        notes = [s["bandwidth"]] if s["bandwidth"] else []
        if s["pesq_skipped"]:
            notes.append(f"PESQ skipped on {s['pesq_skipped']} file(s)")
        if s["stoi_skipped"]:
            notes.append(f"STOI skipped on {s['stoi_skipped']} file(s)")
        lines.append(
            f"{s['family']:<7} {s['setting']:<10} {s['kbps']:>6.2f} {num(s['payload_kbps'], '7.2f'):>7} "
            f"{num(s['pesq_wb'], '7.3f'):>7} {num(s['stoi'], '6.3f'):>6} {num(s['si_sdr'], '7.2f'):>7} "
            f"{num(s['mel_distance'], '6.3f'):>6} {s['lag_ms']:>7.2f}  {'; '.join(notes)}"
        )
    return "\n".join(lines)


def write_csv(path: Path, records: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in records)


def closest(systems: list[System], family: str, kbps: float) -> System | None:
    candidates = [s for s in systems if s.family == family]
    return min(candidates, key=lambda s: abs(s.nominal_kbps - kbps)) if candidates else None


def active_seconds(audio: np.ndarray, seconds: float = plots.SPECTROGRAM_SECONDS) -> float:
    """Seconds of 20 ms frames within 30 dB of the loudest, in the part a spectrogram shows."""
    frames = audio[: int(seconds * SAMPLE_RATE)]
    frames = frames[: len(frames) // 320 * 320].reshape(-1, 320)
    energy = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    return float(np.sum(energy > energy.max() - 30)) * 0.02 if len(energy) else 0.0


def render_examples(systems: list[System], files: list[AudioFile], count: int, delays: dict[str, int]) -> list[plots.Example]:
    """The `count` busiest of the first 50 clips through ours at ~1.5 and ~3 kbps, Opus 6 kbps and
    Codec2 3200 (those that ran), aligned as they were for scoring."""
    busiest = sorted(files[:50], key=lambda f: -active_seconds(load_audio(f.path)))[:count]
    wanted = [closest(systems, "ours", 1.5), closest(systems, "ours", 3.0), closest(systems, "opus", 6),
              closest(systems, "codec2", 3.2)]
    examples = []
    for file in busiest:
        reference = load_audio(file.path)
        panels = [("reference", reference)]
        for system in dict.fromkeys(s for s in wanted if s is not None):
            output = system.run(reference)
            kbps = output.num_bytes * 8 / (len(reference) / SAMPLE_RATE) / 1000
            panels.append((f"{system.name}\n{kbps:.2f} kbps charged", shift(output.audio, delays[system.name], len(reference))))
        examples.append(plots.Example(file.name, panels))
    return examples


def measure_usage(codec: Codec, files: list[AudioFile]) -> list[LevelUsage]:
    """Codebook usage per level over all the files, coded with every level."""
    levels = codec.config.quantizer.num_levels
    codes = []
    for file in tqdm(files, desc="codebook usage", unit="file"):
        encoded = codec.encode(torch.from_numpy(load_audio(file.path))[None], SAMPLE_RATE, bitrate=None)
        codes.append(encoded.codes[:, :levels])
    return codebook_usage(torch.cat(codes, dim=-1), codec.config.quantizer.codebook_size)


def format_usage(usage: dict[str, list[LevelUsage]], codebook_size: int) -> str:
    names = list(usage)
    lines = [f"codebook usage: entries used at least once of {codebook_size} per level (perplexity)",
             "level  " + "  ".join(f"{name:>28}" for name in names)]
    for level in range(len(usage[names[0]])):
        cells = [f"{100 * usage[n][level].used_fraction:5.1f}% ({usage[n][level].perplexity:6.1f})" for n in names]
        lines.append(f"{level + 1:>5}  " + "  ".join(f"{cell:>28}" for cell in cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[dict]:
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    max_lag_s = args.max_lag_ms / 1000
    codec = None if args.no_codec else Codec.load(args.checkpoint)
    needs_prior = (args.entropy_bitrates or args.pitch_bitrates) and codec is not None
    prior = load_prior(args.prior, codec) if needs_prior else None
    systems = build_systems(codec, args.bitrates, not args.no_baselines,
                            entropy_bitrates=args.entropy_bitrates, prior=prior, pitch_bitrates=args.pitch_bitrates)
    if not systems:
        raise SystemExit("nothing to evaluate: no codec and no baselines")
    files = list_files(args)
    if not files:
        raise SystemExit("no audio files found")
    print(f"{len(files)} files, {sum(f.seconds for f in files) / 60:.2f} minutes, "
          f"{len(systems)} systems: {', '.join(s.name for s in systems)}")
    delays = calibrate_delays(systems, files[: args.delay_files], max_lag_s)
    print("delays removed (ms, measured on the first "
          f"{min(args.delay_files, len(files))} files): "
          + ", ".join(f"{name} {1000 * lag / SAMPLE_RATE:+.2f}" for name, lag in delays.items()))

    if args.jobs > 1:
        pool = ProcessPoolExecutor(
            args.jobs, multiprocessing.get_context("spawn"), _init_worker,
            (args.checkpoint, args.bitrates, not args.no_baselines, codec is not None, args.threads,
             args.entropy_bitrates, args.prior, args.pitch_bitrates),
        )
        futures = [pool.submit(_evaluate_in_worker, f, delays) for f in files]
        results = [future.result() for future in tqdm(futures, desc="files", unit="file")]
        pool.shutdown()
    else:
        results = [evaluate_file(systems, f, delays) for f in tqdm(files, desc="files", unit="file")]

    rows = [row for result in results for row in result.rows]
    summary = summarize(results)
    write_csv(out / "per_file.csv", [asdict(r) for r in rows])
    write_csv(out / "summary.csv", summary)
    minutes = sum(f.seconds for f in files) / 60
    plots.rate_distortion(summary, out / "rate_distortion.png", f"{len(files)} files, {minutes:.1f} min")
    if args.examples > 0:
        plots.spectrograms(render_examples(systems, files, args.examples, delays), out / "spectrograms.png")
    usage: dict[str, list[LevelUsage]] = {}
    if codec is not None:
        usage[f"scored files, {minutes:.1f} min"] = measure_usage(codec, files)
        if args.usage_whole_split and args.manifest:
            split = manifest_files(args.manifest, args.split)
            usage[f"whole {args.split} split, {sum(f.seconds for f in split) / 60:.1f} min"] = measure_usage(codec, split)
        write_csv(out / "usage.csv", [{"files": name, **asdict(u)} for name, levels in usage.items() for u in levels])

    print(f"\n{len(files)} files, {minutes:.2f} minutes of audio; metrics are means over files; kbps = file "
          "bytes * 8 / duration (ours: bitstream header, opus: Ogg pages and OpusHead/OpusTags, codec2: .c2 "
          "header, all included); payload = the coded frames alone; lag = the system's delay, removed")
    print(format_table(summary))
    if usage:
        print("\n" + format_usage(usage, codec.config.quantizer.codebook_size))
    elapsed = time.perf_counter() - start
    print(f"\ncodec time {sum(s['codec_s'] for s in summary):.1f} s, scoring time "
          f"{sum(s['score_s'] for s in summary):.1f} s (summed over jobs), wall {elapsed:.1f} s "
          f"with {args.jobs} job(s)")
    print(f"wrote {', '.join(str(out / n) for n in ('per_file.csv', 'summary.csv', 'rate_distortion.png', 'spectrograms.png'))}")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", help="evaluate every audio file under this folder")
    source.add_argument("--manifest", help="a corpus manifest (training.corpus)")
    parser.add_argument("--split", default="val", help="manifest split")
    parser.add_argument("--kind", action="append", help="manifest kind (speech, tts, music); repeatable")
    parser.add_argument("--checkpoint", help="codec checkpoint; default: the bundled model")
    parser.add_argument("--bitrates", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 1.5, 3.0, 6.0],
                        help="our codec's bitrates in kbps, comma-separated")
    parser.add_argument("--entropy-bitrates", type=lambda s: [float(x) for x in s.split(",")], default=[],
                        help="also our codec at these kbps with its tokens entropy-coded by the prior "
                             "(charged the bytes of `codec encode --entropy`'s file)")
    parser.add_argument("--pitch-bitrates", type=lambda s: [float(x) for x in s.split(",")], default=[],
                        help="also our codec at these kbps entropy-coded with the pitch side stream "
                             "(charged the bytes of `codec encode --entropy --pitch`'s file)")
    parser.add_argument("--prior", help="prior checkpoint for --entropy-bitrates; default: the bundled prior")
    parser.add_argument("--no-baselines", action="store_true", help="skip Opus and Codec2")
    parser.add_argument("--no-codec", action="store_true", help="baselines only")
    parser.add_argument("--max-files", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0, help="order in which files are taken")
    parser.add_argument("--max-lag-ms", type=float, default=100.0,
                        help="delay compensation searches lags up to this; 0 scores outputs as they are")
    parser.add_argument("--delay-files", type=int, default=20,
                        help="files on which each system's delay is measured (pooled over them)")
    parser.add_argument("--examples", type=int, default=2, help="clips shown in spectrograms.png (0: no spectrograms)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (one model each)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process; more than one is slower when the cores are busy")
    parser.add_argument("--usage-whole-split", action="store_true",
                        help="also measure codebook usage over every file of --split, of every kind")
    parser.add_argument("--out", default="docs/eval")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
