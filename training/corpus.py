"""Build the codec's training and validation audio corpus from offline sources.

    python -m training.corpus --out data/corpus [--cache data/cache] [--sources a,b,...]
                              [--max-minutes-per-source M]

Fetches Debian packages into the cache (`apt-get download`, `dpkg -x`), synthesizes some
TTS speech, and writes every recording as 16 kHz mono 16-bit FLAC, cut into chunks of at
most 30 s, to `<out>/<split>/<kind>/<package>/<name>.flac`. `<out>/manifest.jsonl` lists
each file with its source package, original path and license. training/sources.py says
what the sources are and which speaker groups are held out for validation.

A build can be stopped and run again. Each FLAC is written to a temp file and then renamed.
Each source keeps a journal, `<out>/parts/<source>.jsonl`, with one line per finished
recording. The manifest is rebuilt from these journals at the end of every run, so a crash
in the middle of a source loses nothing that was already written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from tqdm import tqdm

from training.sources import (
    SOURCES,
    SOURCES_BY_NAME,
    STAMP_TEXT_PACKAGE,
    Item,
    Source,
    package_items,
    split_for,
    stamp_sentences,
    tts_items,
)

SAMPLE_RATE = 16000
MAX_CHUNK_S = 30.0
MIN_CLIP_S = 0.3
SILENCE_PEAK = 2 / 32768  # at most one 16-bit step: nothing survives quantization
MIN_VAL_SPEECH_MINUTES = 12.0
TTS_TOOLS = ("flite", "espeak-ng")


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative to the corpus root
    source_package: str
    original_path: str  # inside the package (for TTS: the text it read)
    license: str
    duration: float  # seconds
    split: str  # "train" or "val"
    kind: str  # "speech", "tts" or "music"
    group: str  # speaker, locale, language or voice pack that decides the split
    sample_rate: int = SAMPLE_RATE


def write_manifest(path: Path, entries: Iterable[ManifestEntry]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in entries))
    os.replace(tmp, path)


def read_manifest(path: Path) -> list[ManifestEntry]:
    return [ManifestEntry(**json.loads(line)) for line in path.read_text().splitlines() if line]


# --- per-source journal: what is already built --------------------------------------------


def read_journal(path: Path) -> dict[str, list[ManifestEntry]]:
    """Item name -> its entries; the last line for a name wins, a torn last line is ignored."""
    done: dict[str, list[ManifestEntry]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[record["name"]] = [ManifestEntry(**e) for e in record["entries"]]
    return done


def end_torn_line(path: Path) -> None:
    """Close a line torn by a crash, so the next record is not glued onto it."""
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def append_journal(path: Path, name: str, entries: list[ManifestEntry]) -> None:
    record = {"name": name, "entries": [asdict(e) for e in entries]}
    with path.open("a") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def is_built(entries: list[ManifestEntry] | None, split: str, out: Path) -> bool:
    """Whether a journaled item can be skipped: same split as now, and its files are there."""
    if entries is None:
        return False
    return all(e.split == split and (out / e.path).exists() for e in entries)


# --- audio ---------------------------------------------------------------------------------


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """[T, C] float samples at `rate` -> [T'] float32 at 16 kHz, channels averaged."""
    mono = torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1), dtype=np.float32))
    if rate != SAMPLE_RATE:
        mono = AF.resample(mono, rate, SAMPLE_RATE)
    return mono.numpy()


def split_chunks(audio: np.ndarray, max_s: float = MAX_CHUNK_S) -> list[np.ndarray]:
    """Cut [T] into equal chunks of at most max_s, so no chunk is a short leftover tail."""
    n_chunks = max(1, math.ceil(len(audio) / (max_s * SAMPLE_RATE)))
    size = math.ceil(len(audio) / n_chunks)
    return [audio[i : i + size] for i in range(0, len(audio), size)] or [audio]


def is_usable(chunk: np.ndarray) -> bool:
    long_enough = len(chunk) >= MIN_CLIP_S * SAMPLE_RATE
    return long_enough and float(np.abs(chunk).max()) >= SILENCE_PEAK


def write_flac_atomic(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(tmp, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def store_clip(
    out: Path, rel: str, audio: np.ndarray, package: str, original: str, license: str, split: str, kind: str, group: str
) -> ManifestEntry:
    """Write `audio` as out/rel (kept when already there, so a rerun resumes) and return its entry."""
    if not (out / rel).exists():
        write_flac_atomic(out / rel, audio)
    duration = round(len(audio) / SAMPLE_RATE, 4)
    return ManifestEntry(rel, package, original, license, duration, split, kind, group)


def convert_item(source: Source, item: Item, out: Path) -> list[ManifestEntry]:
    """Decode, convert and write one recording; returns an entry per chunk kept.

    Files below 16 kHz are dropped: upsampled narrowband audio would teach the codec that
    speech has no high band. Chunks already on disk are not written again.
    """
    samples, rate = item.load()
    if rate < SAMPLE_RATE:
        return []
    chunks = split_chunks(to_mono_16k(samples, rate))
    split = split_for(source, item.group)
    entries = []
    for k, chunk in enumerate(chunks):
        if not is_usable(chunk):
            continue
        stem = item.name if len(chunks) == 1 else f"{item.name}_c{k:03d}"
        rel = f"{split}/{source.kind}/{source.package}/{stem}.flac"
        entries.append(
            store_clip(
                out, rel, chunk, source.package, item.original_path, source.license, split, source.kind, item.group
            )
        )
    return entries


# --- building one source -------------------------------------------------------------------


@dataclass
class SourceReport:
    source: Source
    seconds: dict[str, float] = field(default_factory=lambda: {"train": 0.0, "val": 0.0})
    files: int = 0
    dropped: int = 0  # recordings with nothing usable: too short, silent or narrowband
    copies: int = 0  # byte-identical files skipped
    failed: list[str] = field(default_factory=list)
    downloads: list[tuple[str, int]] = field(default_factory=list)  # (.deb name, bytes)


def build_source(
    source: Source,
    items: Iterable[Item],
    out: Path,
    report: SourceReport,
    max_seconds: float = math.inf,
    total: int | None = None,
) -> None:
    """Convert items until max_seconds are built, skipping what the journal has."""
    journal = out / "parts" / f"{source.name}.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    end_torn_line(journal)
    done = read_journal(journal)
    built = 0.0
    for item in tqdm(items, desc=source.name, total=total, unit="file"):
        if built >= max_seconds:
            break
        entries = done.get(item.name)
        if not is_built(entries, split_for(source, item.group), out):
            try:
                entries = convert_item(source, item, out)
            except Exception as error:  # a bad file must not stop the build, nor vanish
                report.failed.append(item.original_path)
                tqdm.write(f"FAILED to decode {source.package}:{item.original_path}: {error}")
                continue
            append_journal(journal, item.name, entries)
        report.dropped += not entries
        report.files += len(entries)
        for entry in entries:
            report.seconds[entry.split] += entry.duration
            built += entry.duration


# --- fetching ------------------------------------------------------------------------------


def run_quiet(command: list[str], cwd: Path | None = None) -> None:
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def download_deb(package: str, cache: Path) -> Path:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        try:
            run_quiet(["apt-get", "download", package], cwd=debs)
        except subprocess.CalledProcessError:  # package lists missing or stale
            run_quiet(["apt-get", "update"])
            run_quiet(["apt-get", "download", package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
    return found[-1]


def unpack_deb(deb: Path, package: str, cache: Path) -> Path:
    target = cache / "pkgs" / package
    if not target.exists():
        tmp = target.with_name(package + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)  # dpkg -x makes the last directory only
        run_quiet(["dpkg", "-x", str(deb), str(tmp)])
        tmp.rename(target)
    return target


def extract_archive(zip_path: Path, prefix: str, dest: Path) -> Path:
    """Extract the zip members under prefix into dest (skipping those already there)."""
    with zipfile.ZipFile(zip_path) as archive:
        for member in archive.namelist():
            target = dest / member
            unsafe = ".." in Path(member).parts or Path(member).is_absolute()
            if unsafe or not member.startswith(prefix) or member.endswith("/") or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(archive.read(member))
            os.replace(tmp, target)
    return dest


def fetch_package(package: str, cache: Path, report: SourceReport) -> Path:
    """Download and unpack a package; checks that its copyright file is there."""
    deb = download_deb(package, cache)
    report.downloads.append((deb.name, deb.stat().st_size))
    package_dir = unpack_deb(deb, package, cache)
    if not (package_dir / "usr/share/doc" / package / "copyright").exists():
        raise FileNotFoundError(f"{package} has no usr/share/doc/{package}/copyright")
    return package_dir


def ensure_tts_tool(engine: str) -> None:
    if shutil.which(engine) is None:
        run_quiet(["apt-get", "install", "-y", "-q", *TTS_TOOLS])
    if not Path(f"/usr/share/doc/{engine}/copyright").exists():
        raise FileNotFoundError(f"{engine} has no copyright file")


def items_for(source: Source, cache: Path, report: SourceReport) -> tuple[Iterable[Item], int | None]:
    """The source's items, and their count where known (TTS items are endless)."""
    if source.kind == "tts":
        ensure_tts_tool(source.package)
        text_dir = fetch_package(STAMP_TEXT_PACKAGE, cache, report)
        return tts_items(source, stamp_sentences(text_dir)), None
    package_dir = fetch_package(source.package, cache, report)
    audio_dir = package_dir
    if source.archive:
        audio_dir = extract_archive(package_dir / source.archive, source.root + "/", package_dir / "_archive")
    items, report.copies = package_items(source, audio_dir, package_dir)
    return items, len(items)


# --- the whole corpus ----------------------------------------------------------------------


def rebuild_manifest(out: Path) -> list[ManifestEntry]:
    """Join every source's journal into manifest.jsonl, listing only files that exist."""
    entries = [
        entry
        for journal in sorted((out / "parts").glob("*.jsonl"))
        for item_entries in read_journal(journal).values()
        for entry in item_entries
        if (out / entry.path).exists()
    ]
    entries.sort(key=lambda e: e.path)
    write_manifest(out / "manifest.jsonl", entries)
    return entries


def print_summary(reports: list[SourceReport], entries: list[ManifestEntry]) -> None:
    print(
        f"\n{'source':28} {'kind':6} {'train min':>9} {'val min':>8} {'files':>6} "
        f"{'dropped':>7} {'copies':>6} {'failed':>6}  downloaded"
    )
    for r in reports:
        downloads = ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for name, size in r.downloads)
        if r.source.kind == "tts":
            downloads = f"apt tool {r.source.package}; text from {downloads}"
        print(
            f"{r.source.name:28} {r.source.kind:6} {r.seconds['train'] / 60:9.1f} "
            f"{r.seconds['val'] / 60:8.1f} {r.files:6d} {r.dropped:7d} {r.copies:6d} "
            f"{len(r.failed):6d}  {downloads}"
        )
    print("\nwhole manifest, minutes:")
    for kind in ("speech", "tts", "music"):
        minutes = {
            split: sum(e.duration for e in entries if (e.kind, e.split) == (kind, split)) / 60
            for split in ("train", "val")
        }
        print(f"  {kind:6}  train {minutes['train']:7.1f}  val {minutes['val']:6.1f}")
    val_speech = sum(e.duration for e in entries if (e.kind, e.split) == ("speech", "val")) / 60
    if val_speech < MIN_VAL_SPEECH_MINUTES:
        print(f"WARNING: only {val_speech:.1f} min of validation speech (want {MIN_VAL_SPEECH_MINUTES:.0f})")
    for r in reports:
        for path in r.failed:
            print(f"FAILED {r.source.package}: {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path("data/cache"))
    parser.add_argument(
        "--sources",
        default=",".join(s.name for s in SOURCES if s.default),
        help="comma-separated; known: " + ", ".join(SOURCES_BY_NAME),
    )
    parser.add_argument("--max-minutes-per-source", type=float, default=None)
    args = parser.parse_args(argv)
    unknown = set(args.sources.split(",")) - set(SOURCES_BY_NAME)
    if unknown:
        parser.error(f"unknown sources {sorted(unknown)}; known: {', '.join(SOURCES_BY_NAME)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the corpus build shares the machine with training jobs
    args.out.mkdir(parents=True, exist_ok=True)
    reports = []
    for name in args.sources.split(","):
        source = SOURCES_BY_NAME[name]
        report = SourceReport(source)
        items, total = items_for(source, args.cache, report)
        limit = source.target_minutes or math.inf
        if args.max_minutes_per_source is not None:
            limit = min(limit, args.max_minutes_per_source)
        build_source(source, items, args.out, report, limit * 60, total)
        reports.append(report)
    print_summary(reports, rebuild_manifest(args.out))


if __name__ == "__main__":
    main()
