"""Compare our codec with Opus and Codec2 on real audio: bitrate charged vs objective quality.

    python -m training.evaluate --manifest data/corpus/manifest.jsonl --split val --kind speech \\
        --checkpoint runs/codec/best.safetensors [--bitrates 1,1.5,3,6] [--max-minutes 20] [--jobs 2]
    python -m training.evaluate --folder my_clips/ --out docs/eval [--english 'en/*'] [--no-perceptual]

Every system is charged the size of the file it writes (ours: the codec.bitstream file, header
included; Opus: the Ogg file; Codec2: the .c2 file). Each system's delay (ours: 0 by construction;
the others: measured once on the first files, training.metrics.system_delay) is removed from all
its outputs before they are scored at 16 kHz with PESQ-WB, STOI, SI-SDR and a log-mel distance,
and (unless --no-perceptual) with the listener-oriented metrics of training.perceptual: DNSMOS
SIG/BAK/OVRL and speaker similarity for every file, dWER for English files. A file is English
where its name (relative to --folder or to the manifest's folder) matches an --english glob or
list file, or where its manifest group is an English language tag ('en', 'en_GB'). The
summary pools dWER over files (word errors / reference words) and shows the originals' DNSMOS
as a 'reference' row: the ceiling for every system.
`--also NAME MANIFEST SPLIT` scores another held-out set in the same run (e.g. the clean set of
training.cleanset beside the validation split), reported and written (to OUT/NAME) on its own.
Each set's report ends with the quality targets (training.targets) checked on it.
Writes per_file.csv, summary.csv, usage.csv (our codebook usage per level over the scored files and,
with --usage-whole-split, over the whole split),
rate_distortion.png and spectrograms.png to --out and prints the summary. Files are taken in a
seeded random order, so a --max-minutes subset mixes sources.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import time
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
from training import perceptual, plots, targets
from training.baselines import CODEC2_MODES, OPUS_KBPS, SAMPLE_RATE, System, build_systems
from training.data import read_manifest
from training.metrics import score, shift, system_delay
from training.results import FileResult, Row, bandwidth_note, format_table, summarize, write_csv

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
MIN_SECONDS = 0.1  # the log-mel distance needs more than one 1024-point frame


@dataclass(frozen=True)
class AudioFile:
    path: str
    name: str  # shown in tables and figures
    seconds: float
    english: bool = False  # scored for dWER


def manifest_files(
    manifest: str,
    split: str,
    kinds: tuple[str, ...] | None = None,
    english: perceptual.EnglishFiles = perceptual.EnglishFiles(),
) -> list[AudioFile]:
    """The manifest's files of this split (and these kinds; None: every kind), in manifest order."""
    root = Path(manifest).parent
    files = []
    for clip in read_manifest(manifest, split, kinds):
        name = os.path.relpath(clip.path, root)
        files.append(AudioFile(clip.path, name, clip.duration, english(name, perceptual.group_language(clip.group))))
    return files


def list_files(args: argparse.Namespace) -> list[AudioFile]:
    english = perceptual.EnglishFiles.parse(args.english)
    if args.manifest:
        files = manifest_files(args.manifest, args.split, tuple(args.kind) if args.kind else None, english)
    else:
        folder = Path(args.folder)
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        names = [str(p.relative_to(folder)) for p in paths]
        files = [AudioFile(str(p), n, sf.info(str(p)).duration, english(n)) for p, n in zip(paths, names)]
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


def calibrate_delays(systems: list[System], files: list[AudioFile], max_lag_s: float) -> dict[str, int]:
    """Each system's delay in samples: its own where known by construction, else measured on
    these files."""
    references = [load_audio(f.path) for f in files]
    max_lag = int(round(max_lag_s * SAMPLE_RATE))
    return {
        s.name: s.delay if s.delay is not None else system_delay([(r, s.run(r).audio) for r in references], max_lag)
        for s in tqdm(systems, desc="measuring delays", unit="system")
    }


def evaluate_file(systems: list[System], file: AudioFile, delays: dict[str, int], listen: bool = False) -> FileResult:
    """Every system's row for one file; `listen`: with the perceptual metrics."""
    reference = load_audio(file.path)
    seconds = len(reference) / SAMPLE_RATE
    rows, bandwidths, transcripts = [], {}, {}
    original = perceptual.listen_to_reference(reference, file.english) if listen else None
    for system in systems:
        start = time.perf_counter()
        output = system.run(reference)
        middle = time.perf_counter()
        lag = delays[system.name]
        aligned = shift(output.audio, lag, len(reference))
        scores = score(reference, aligned)
        scored = time.perf_counter()
        heard = {}
        if original is not None:
            listening = perceptual.listen(original, aligned)
            heard = asdict(listening.scores) | {"listen_s": time.perf_counter() - scored}
            if listening.transcript is not None:
                transcripts[system.name] = (original.transcript, listening.transcript)
        kbps = output.num_bytes * 8 / seconds / 1000
        rows.append(
            Row(
                file.name,
                seconds,
                system.family,
                system.setting,
                output.num_bytes,
                kbps,
                output.payload_bps / 1000,
                1000 * lag / SAMPLE_RATE,
                scores.pesq_wb,
                scores.stoi,
                scores.si_sdr,
                scores.mel_distance,
                bandwidth_note(output.bandwidths),
                middle - start,
                scored - middle,
                **heard,
            )
        )
        bandwidths[system.name] = output.bandwidths
    return FileResult(rows, bandwidths, original.dnsmos if original else None, transcripts)


# Worker processes build their own systems once (a model per process), then take files.
_worker_systems: list[System] = []


def _init_worker(
    checkpoint: str | None,
    bitrates: list[float],
    baselines: bool,
    use_codec: bool,
    threads: int,
    entropy_bitrates: list[float] = (),
    prior_checkpoint: str | None = None,
    pitch_bitrates: list[float] = (),
    opus_kbps=OPUS_KBPS,
    codec2_modes=CODEC2_MODES,
) -> None:
    global _worker_systems
    torch.set_num_threads(threads)
    codec = Codec.load(checkpoint) if use_codec else None
    needs_prior = (entropy_bitrates or pitch_bitrates) and codec is not None
    prior = load_prior(prior_checkpoint, codec) if needs_prior else None
    _worker_systems = build_systems(
        codec,
        bitrates,
        baselines,
        warn=lambda *_: None,
        entropy_bitrates=entropy_bitrates,
        prior=prior,
        pitch_bitrates=pitch_bitrates,
        opus_kbps=opus_kbps,
        codec2_modes=codec2_modes,
    )


def load_prior(path: str | None, codec: Codec) -> TokenPrior:
    """The prior for entropy-coded systems; it must model this codec's tokens."""
    prior = TokenPrior.load(path)
    if reason := prior.mismatch(codec):
        raise SystemExit(reason)
    return prior


def _evaluate_in_worker(file: AudioFile, delays: dict[str, int], listen: bool) -> FileResult:
    return evaluate_file(_worker_systems, file, delays, listen)


def closest(systems: list[System], family: str, kbps: float) -> System | None:
    candidates = [s for s in systems if s.family == family]
    return min(candidates, key=lambda s: abs(s.nominal_kbps - kbps)) if candidates else None


def active_seconds(audio: np.ndarray, seconds: float = plots.SPECTROGRAM_SECONDS) -> float:
    """Seconds of 20 ms frames within 30 dB of the loudest, in the part a spectrogram shows."""
    frames = audio[: int(seconds * SAMPLE_RATE)]
    frames = frames[: len(frames) // 320 * 320].reshape(-1, 320)
    energy = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    return float(np.sum(energy > energy.max() - 30)) * 0.02 if len(energy) else 0.0


def render_examples(
    systems: list[System], files: list[AudioFile], count: int, delays: dict[str, int]
) -> list[plots.Example]:
    """The `count` busiest of the first 50 clips through ours at ~1.5 and ~3 kbps, Opus 6 kbps and
    Codec2 3200 (those that ran), aligned as they were for scoring."""
    busiest = sorted(files[:50], key=lambda f: -active_seconds(load_audio(f.path)))[:count]
    wanted = [
        closest(systems, "ours", 1.5),
        closest(systems, "ours", 3.0),
        closest(systems, "opus", 6),
        closest(systems, "codec2", 3.2),
    ]
    examples = []
    for file in busiest:
        reference = load_audio(file.path)
        panels = [("reference", reference)]
        for system in dict.fromkeys(s for s in wanted if s is not None):
            output = system.run(reference)
            kbps = output.num_bytes * 8 / (len(reference) / SAMPLE_RATE) / 1000
            panels.append(
                (f"{system.name}\n{kbps:.2f} kbps charged", shift(output.audio, delays[system.name], len(reference)))
            )
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
    lines = [
        f"codebook usage: entries used at least once of {codebook_size} per level (perplexity)",
        "level  " + "  ".join(f"{name:>28}" for name in names),
    ]
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
    systems = build_systems(
        codec,
        args.bitrates,
        not args.no_baselines,
        entropy_bitrates=args.entropy_bitrates,
        prior=prior,
        pitch_bitrates=args.pitch_bitrates,
        opus_kbps=args.opus_kbps,
        codec2_modes=args.codec2_modes,
    )
    if not systems:
        raise SystemExit("nothing to evaluate: no codec and no baselines")
    files = list_files(args)
    if not files:
        raise SystemExit("no audio files found")
    print(
        f"{len(files)} files, {sum(f.seconds for f in files) / 60:.2f} minutes, "
        f"{len(systems)} systems: {', '.join(s.name for s in systems)}"
    )
    if args.perceptual:
        print(f"dWER on the {sum(f.english for f in files)} English file(s); DNSMOS and speaker similarity on all")
    delays = calibrate_delays(systems, files[: args.delay_files], max_lag_s)
    print(
        "delays removed (ms, measured on the first "
        f"{min(args.delay_files, len(files))} files): "
        + ", ".join(f"{name} {1000 * lag / SAMPLE_RATE:+.2f}" for name, lag in delays.items())
    )

    if args.jobs > 1:
        pool = ProcessPoolExecutor(
            args.jobs,
            multiprocessing.get_context("spawn"),
            _init_worker,
            (
                args.checkpoint,
                args.bitrates,
                not args.no_baselines,
                codec is not None,
                args.threads,
                args.entropy_bitrates,
                args.prior,
                args.pitch_bitrates,
                args.opus_kbps,
                args.codec2_modes,
            ),
        )
        futures = [pool.submit(_evaluate_in_worker, f, delays, args.perceptual) for f in files]
        results = [future.result() for future in tqdm(futures, desc="files", unit="file")]
        pool.shutdown()
    else:
        results = [evaluate_file(systems, f, delays, args.perceptual) for f in tqdm(files, desc="files", unit="file")]

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
            usage[f"whole {args.split} split, {sum(f.seconds for f in split) / 60:.1f} min"] = measure_usage(
                codec, split
            )
        write_csv(out / "usage.csv", [{"files": name, **asdict(u)} for name, levels in usage.items() for u in levels])

    print(
        f"\n{len(files)} files, {minutes:.2f} minutes of audio; metrics are means over files; kbps = file "
        "bytes * 8 / duration (ours: bitstream header, opus: Ogg pages and OpusHead/OpusTags, codec2: .c2 "
        "header, all included); payload = the coded frames alone; lag = the system's delay, removed"
    )
    if args.perceptual:
        print(
            "dWER = word errors of pocketsphinx on the output against its transcript of the original, pooled "
            "over English files; SIG/BAK/OVRL = DNSMOS P.835 (reference: the originals); spk = speaker similarity"
        )
    print(format_table(summary))
    print("\ntargets:\n" + targets.report(summary))
    if usage:
        print("\n" + format_usage(usage, codec.config.quantizer.codebook_size))
    elapsed = time.perf_counter() - start
    print(
        f"\ncodec time {sum(s['codec_s'] or 0 for s in summary):.1f} s, scoring time "
        f"{sum(s['score_s'] or 0 for s in summary):.1f} s, "
        f"perceptual metrics {sum(s['listen_s'] or 0 for s in summary):.1f} s "
        f"(summed over jobs), wall {elapsed:.1f} s with {args.jobs} job(s)"
    )
    written = ("per_file.csv", "summary.csv", "rate_distortion.png", "spectrograms.png")
    print(f"wrote {', '.join(str(out / n) for n in written)}")
    return summary


def list_option(parser: argparse.ArgumentParser, name: str, kind: type, default: list, help: str) -> None:
    """An option taking comma-separated values of `kind`."""
    parser.add_argument(
        name, type=lambda text: [kind(x) for x in text.split(",")], default=default, help=help + ", comma-separated"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", help="evaluate every audio file under this folder")
    source.add_argument("--manifest", help="a corpus manifest (training.corpus)")
    parser.add_argument("--split", default="val", help="manifest split")
    parser.add_argument("--kind", action="append", help="manifest kind (speech, tts, music); repeatable")
    parser.add_argument("--checkpoint", help="codec checkpoint; default: the bundled model")
    list_option(parser, "--bitrates", float, [1.0, 1.5, 3.0, 6.0], "our codec's bitrates in kbps")
    list_option(
        parser,
        "--entropy-bitrates",
        float,
        [],
        "also our codec at these kbps with its tokens entropy-coded by the prior "
        "(charged the bytes of `codec encode --entropy`'s file)",
    )
    list_option(parser, "--opus-kbps", float, OPUS_KBPS, "Opus bitrates (kbps)")
    list_option(parser, "--codec2-modes", int, CODEC2_MODES, "Codec2 modes (bit/s)")
    list_option(
        parser,
        "--pitch-bitrates",
        float,
        [],
        "also our codec at these kbps entropy-coded with the pitch side stream "
        "(charged the bytes of `codec encode --entropy --pitch`'s file)",
    )
    parser.add_argument("--prior", help="prior checkpoint for --entropy-bitrates; default: the bundled prior")
    parser.add_argument("--no-baselines", action="store_true", help="skip Opus and Codec2")
    parser.add_argument("--no-codec", action="store_true", help="baselines only")
    parser.add_argument("--max-files", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0, help="order in which files are taken")
    parser.add_argument(
        "--max-lag-ms",
        type=float,
        default=100.0,
        help="delay compensation searches lags up to this; 0 scores outputs as they are",
    )
    parser.add_argument(
        "--delay-files", type=int, default=20, help="files on which each system's delay is measured (pooled over them)"
    )
    parser.add_argument("--examples", type=int, default=2, help="clips shown in spectrograms.png (0: no spectrograms)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (one model each)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per process; more than one is slower when the cores are busy",
    )
    parser.add_argument(
        "--perceptual",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dWER, DNSMOS and speaker similarity (training.perceptual); --no-perceptual skips them",
    )
    parser.add_argument(
        "--english",
        action="append",
        default=[],
        metavar="GLOB_OR_LIST",
        help="files scored for dWER: a glob on the file's relative name ('*' crosses '/'), or a "
        "file listing relative names one a line; repeatable. Manifest files whose group is "
        "'en' or 'en_XX' are English without it",
    )
    parser.add_argument(
        "--usage-whole-split",
        action="store_true",
        help="also measure codebook usage over every file of --split, of every kind",
    )
    parser.add_argument(
        "--also",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "MANIFEST", "SPLIT"),
        help="another held-out set scored in the same run with the same systems and options (--kind included), "
        "reported on its own and written to OUT/NAME; repeatable",
    )
    parser.add_argument(
        "--also-max-minutes", type=float, help="--max-minutes for the --also sets (default: the same as the main set's)"
    )
    parser.add_argument("--out", default="docs/eval")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sets = [(args.manifest or args.folder, args)] + [
        (
            name,
            argparse.Namespace(
                **{
                    **vars(args),
                    "manifest": manifest,
                    "folder": None,
                    "split": split,
                    "out": str(Path(args.out) / name),
                    "usage_whole_split": False,
                    "max_minutes": args.max_minutes if args.also_max_minutes is None else args.also_max_minutes,
                }
            ),
        )
        for name, manifest, split in args.also
    ]
    for name, set_args in sets:
        if len(sets) > 1:
            split = set_args.split if set_args.manifest else "folder"
            print(f"\n===== held-out set {name} ({split}) -> {set_args.out} =====")
        run(set_args)


if __name__ == "__main__":
    main()
