"""Where the corpus audio comes from: Debian packages and two offline TTS engines.

A `Source` says which files of an unpacked package are audio, how to read a file's speaker
group from its path, and which groups are held out for validation. The held-out groups are
a fixed list, not a random draw, so every build gives the same split. They are whole
languages or voice packs, so no reader is heard in both splits. The same language is held
out of klettres and ktuberling because KDE translators often recorded both. Together with
pocketsphinx-testdata and codec2 they give about 20 minutes of validation speech, more than
the 12 we need.

`package_items` and `tts_items` turn a source into `Item`s, which the builder in
training/corpus.py converts and writes.
"""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import tempfile
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf

ALL = "*"  # a val_groups entry that holds out the whole source
STAMPS_DIR = "usr/share/tuxpaint/stamps"  # also the text that the TTS engines read
STAMP_TEXT_PACKAGE = "tuxpaint-stamps-default"
_LANG_GROUP = r"^(?P<group>[^/]+)/"  # the first folder under root names the group


@dataclass(frozen=True)
class Source:
    name: str  # CLI name; also names the manifest part
    package: str  # Debian package with the audio, or the TTS engine
    kind: str  # "speech", "tts" or "music"
    license: str  # short SPDX-like name, read from the package's copyright file
    root: str = ""  # folder in the unpacked package (or in `archive`) that holds the audio
    patterns: tuple[str, ...] = ()  # globs under root
    group_regex: str = ""  # finds the named group "group" in the path under root
    default_group: str = ""  # group where group_regex is empty or finds none
    val_groups: frozenset[str] = frozenset()  # groups held out for validation; ALL: all
    default: bool = True  # built when --sources is not given
    raw_rate: int = 0  # *.raw files are headerless 16-bit little-endian mono at this rate
    archive: str = ""  # zip inside the package whose members under root are the audio
    voices: tuple[tuple[str, str], ...] = ()  # TTS: (engine voice, text locale)
    target_minutes: float = 0.0  # TTS: how much to synthesize


def _music(package: str, root: str, license: str, patterns=("**/*.ogg",), **kw) -> Source:
    return Source(package, package, "music", license, root, patterns, default_group=package, **kw)


SOURCES: tuple[Source, ...] = (
    Source(
        "fillets-ng-data-cs",
        "fillets-ng-data-cs",
        "speech",
        "GPL-2",
        "usr/share/games/fillets-ng/sound",
        ("*/cs/*.ogg",),
        default_group="cs",
    ),
    Source(
        "tuxpaint-stamps-default",
        "tuxpaint-stamps-default",
        "speech",
        "GPL-2",
        STAMPS_DIR,
        ("**/*_desc*.ogg", "**/*_desc*.wav"),
        group_regex=r"_desc(?:_(?P<group>[a-z]{2,3}(?:_[A-Z]{2})?))?\.",
        default_group="en",
        val_groups=frozenset({"da"}),
    ),
    Source(
        "klettres-data",
        "klettres-data",
        "speech",
        "GPL-2+",
        "usr/share/klettres",
        ("*/*/*.ogg",),
        group_regex=_LANG_GROUP,
        val_groups=frozenset({"da", "uk"}),
    ),
    Source(
        "ktuberling-data",
        "ktuberling-data",
        "speech",
        "GPL-2+",
        "usr/share/ktuberling/sounds",
        ("*/*.ogg", "*/*.wav", "*/*.opus"),
        group_regex=_LANG_GROUP,
        val_groups=frozenset({"da", "uk"}),
    ),
    Source(
        "hedgewars-voices",
        "hedgewars-data",
        "speech",
        "GFDL-1.3",
        "usr/share/games/hedgewars/Data/Sounds/voices",
        ("*/*.ogg",),
        group_regex=_LANG_GROUP,
        val_groups=frozenset({"Pirate"}),
    ),
    Source(
        "pocketsphinx-testdata",
        "pocketsphinx-testdata",
        "speech",
        "BSD-2",
        "usr/share/pocketsphinx/test/data",
        ("**/*.wav", "**/*.raw"),
        group_regex=_LANG_GROUP,
        default_group="pocketsphinx",
        val_groups=frozenset({ALL}),
        raw_rate=16000,
    ),
    Source(
        "codec2-examples",
        "codec2-examples",
        "speech",
        "LGPL-2.1",
        "usr/share/codec2/raw",
        ("speech_orig_16k.wav",),
        default_group="codec2",
        val_groups=frozenset({ALL}),
    ),
    # TTS audio is read from tuxpaint's GPL-2 stamp descriptions; the engines put no licence on it.
    Source(
        "flite",
        "flite",
        "tts",
        "GPL-2",
        voices=(("kal16", "en"), ("awb", "en"), ("rms", "en"), ("slt", "en")),
        target_minutes=22,
    ),
    Source(
        "espeak-ng",
        "espeak-ng",
        "tts",
        "GPL-2",
        voices=(
            ("en-us", "en"),
            ("de", "de"),
            ("fr-fr", "fr"),
            ("es", "es"),
            ("it", "it"),
            ("pt-br", "pt_BR"),
            ("ru", "ru"),
            ("pl", "pl"),
            ("nl", "nl"),
            ("sv", "sv"),
            ("fi", "fi"),
            ("hu", "hu"),
        ),
        target_minutes=26,
    ),
    _music("warzone2100-music", "usr/share/games/warzone2100/music", "GPL-2+", ("**/*.opus",)),
    # Mandarin syllables in all four tones, two voices under different licenses (per the copyright file).
    Source(
        "gcin-voice-liu",
        "gcin-voice",
        "speech",
        "GPL-3",
        "usr/share/gcin-voice/ogg",
        ("*/3.ogg",),
        default_group="zh-liu",
    ),
    Source(
        "gcin-voice-chu",
        "gcin-voice",
        "speech",
        "CC-BY-3.0",
        "usr/share/gcin-voice/ogg",
        ("*/5.ogg",),
        default_group="zh-chu",
    ),
    Source(
        "hedgewars-music",
        "hedgewars-data",
        "music",
        "GPL-2",
        "usr/share/games/hedgewars/Data/Music",
        ("**/*.ogg",),
        default_group="hedgewars-music",
    ),
    _music("drascula-music", "usr/share/scummvm/drascula", "LicenseRef-Drascula", val_groups=frozenset({ALL})),
    _music("fretsonfire-songs-muldjord", "usr/share/games/fretsonfire/data/songs", "CC-BY-SA-3.0"),
    _music("fretsonfire-songs-sectoid", "usr/share/games/fretsonfire/data/songs", "MIT"),
    # Band-limited (muffled) recordings: only on request.
    Source(
        "fillets-ng-data-nl",
        "fillets-ng-data-nl",
        "speech",
        "GPL-2",
        "usr/share/games/fillets-ng/sound",
        ("*/nl/*.ogg",),
        default_group="nl",
        default=False,
    ),
    # A 1.4 GB download: only on request.
    Source(
        "0ad-data",
        "0ad-data",
        "music",
        "CC-BY-SA-3.0",
        "audio",
        ("**/*.ogg",),
        group_regex=_LANG_GROUP,
        default_group="0ad",
        default=False,
        archive="usr/share/games/0ad/mods/public/public.zip",
    ),
)
SOURCES_BY_NAME = {s.name: s for s in SOURCES}


@dataclass(frozen=True)
class Item:
    """One recording to convert: a file from a package, or one TTS utterance."""

    name: str  # output file stem, unique within its source
    original_path: str
    group: str
    load: Callable[[], tuple[np.ndarray, int]]  # -> (samples [T, C] float32, sample rate)


def group_of(source: Source, rel_path: str) -> str:
    match = re.search(source.group_regex, rel_path) if source.group_regex else None
    return (match and match.group("group")) or source.default_group


def split_for(source: Source, group: str) -> str:
    held_out = ALL in source.val_groups or group in source.val_groups
    return "val" if held_out else "train"


def safe_name(rel_path: str) -> str:
    """A file name for the converted copy: "/" -> "__", non-ASCII letters -> their code point (so
    folders named in other scripts stay distinct), other unsafe characters -> "_"."""
    stem = str(Path(rel_path).with_suffix("")).replace("/", "__")
    stem = "".join(f"u{ord(c):04x}" if ord(c) > 127 else c for c in stem)
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", stem)


def unique_files(root: Path, patterns: tuple[str, ...]) -> tuple[list[Path], int]:
    """Files matching patterns, sorted, keeping the first of byte-identical copies.

    Copies (symlinks, the same clip under two names) would otherwise put one recording in
    both splits. Returns (files, number of copies skipped).
    """
    paths = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    seen, kept = set(), []
    for path in paths:
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            kept.append(path)
    return kept, len(paths) - len(kept)


def read_audio(path: Path, raw_rate: int = 0) -> tuple[np.ndarray, int]:
    """Decode a file to float32 samples [T, C] and its sample rate."""
    if raw_rate and path.suffix == ".raw":
        samples, rate = sf.read(
            path,
            samplerate=raw_rate,
            channels=1,
            subtype="PCM_16",
            format="RAW",
            endian="LITTLE",
            dtype="float32",
            always_2d=True,
        )
    else:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    return samples, rate


def package_items(source: Source, audio_dir: Path, package_dir: Path) -> tuple[list[Item], int]:
    """Items for the audio files under audio_dir/root; also returns the count of copies skipped."""
    root = audio_dir / source.root
    files, copies = unique_files(root, source.patterns)
    items = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        items.append(
            Item(
                safe_name(rel),
                path.relative_to(package_dir).as_posix(),
                group_of(source, rel),
                lambda p=path: read_audio(p, source.raw_rate),
            )
        )
    if len({item.name for item in items}) != len(items):
        raise ValueError(f"{source.name}: two files map to one output name")
    return items, copies


_LOCALE_LINE = re.compile(r"^(?P<locale>[a-z]{2,3}(?:_[A-Z]{2})?(?:@\w+)?)\.utf8=(?P<text>.*)$")


def parse_stamp_text(text: str) -> dict[str, str]:
    """A tuxpaint stamp description: English first line, then `locale.utf8=text` lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    sentences = {}
    for i, line in enumerate(lines):
        match = _LOCALE_LINE.match(line)
        if match:
            sentences[match["locale"]] = match["text"].strip()
        elif i == 0:
            sentences["en"] = line
    return {locale: s for locale, s in sentences.items() if s}


def stamp_sentences(text_package_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """locale -> [(path of the description in the package, sentence)], in path order."""
    by_locale: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((text_package_dir / STAMPS_DIR).glob("**/*.txt")):
        rel = path.relative_to(text_package_dir).as_posix()
        for locale, sentence in parse_stamp_text(path.read_text(errors="replace")).items():
            by_locale.setdefault(locale, []).append((rel, sentence))
    return by_locale


_ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt")


def tts_command(engine: str, voice: str, text: str, wav: Path, rng: random.Random) -> list[str]:
    """Command line that speaks text into wav, with a random speaking style."""
    text = text.lstrip("-")  # would read as an option
    if engine == "flite":
        stretch = f"duration_stretch={rng.uniform(0.85, 1.2):.2f}"
        return ["flite", "-voice", voice, "--setf", stretch, "-t", text, "-o", str(wav)]
    variant = rng.choice(_ESPEAK_VARIANTS)
    return [
        "espeak-ng",
        "-v",
        f"{voice}+{variant}",
        "-p",
        str(rng.randint(25, 75)),
        "-s",
        str(rng.randint(130, 195)),
        "-w",
        str(wav),
        text,
    ]


def synthesize(command: list[str], wav: Path) -> tuple[np.ndarray, int]:
    subprocess.run(command, check=True, capture_output=True)
    return read_audio(wav)


def _synthesize_to_temp(engine: str, voice: str, text: str, seed: str):
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "tts.wav"
        return synthesize(tts_command(engine, voice, text, wav, random.Random(seed)), wav)


def tts_items(source: Source, sentences: dict[str, list[tuple[str, str]]]) -> Iterator[Item]:
    """Endless utterances, cycling through the voices; item i is the same on every run."""
    voices = [(voice, locale) for voice, locale in source.voices if sentences.get(locale)]
    for i in count():
        voice, locale = voices[i % len(voices)]
        rng = random.Random(f"{source.name}/{i}")
        picked = [rng.choice(sentences[locale]) for _ in range(rng.randint(1, 3))]
        text = " ".join(sentence for _, sentence in picked)
        original = " + ".join(f"{STAMP_TEXT_PACKAGE}:{path}#{locale}" for path, _ in picked)
        seed = f"{source.name}/{i}/style"
        yield Item(
            f"{voice}_{i:05d}",
            original,
            f"{source.package}:{voice}",
            lambda v=voice, t=text, s=seed: _synthesize_to_temp(source.package, v, t, s),
        )
