"""The systems an evaluation compares: our codec at several bitrates, Opus and Codec2.

Each system turns a 16 kHz mono signal into a file, is charged that file's size, and decodes it
back to 16 kHz. Opus and Codec2 run as their command-line tools (Debian packages `opus-tools`
and `codec2`); where a tool is missing its systems are left out with a warning.

- Opus: `opusenc --bitrate B` on a 16 kHz WAV, libopus picks the coded bandwidth itself; the
  .opus file is Ogg, so its size includes page headers and the OpusHead/OpusTags packets
  (about 1 kbps of overhead on a few-second clip). `opusdec --rate 16000` decodes.
- Codec2: narrowband only. 16 kHz -> 8 kHz raw s16 -> `c2enc MODE x.c2` (a .c2 name makes it
  write a 7-byte header with the mode) -> `c2dec` -> back to 16 kHz.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from codec import Codec, bitstream
from codec.prior_api import TokenPrior

SAMPLE_RATE = 16000
OPUS_KBPS = (6, 8, 12)
CODEC2_MODES = (3200, 1600)
CODEC2_HEADER_BYTES = 7  # magic, version and mode, written because the file name ends in .c2


@dataclass
class SystemOutput:
    audio: np.ndarray  # [T'] float32 at 16 kHz, not yet aligned with the input
    num_bytes: int  # size of the file this system would store or send
    payload_bps: float  # bits/s of the coded frames alone: no file header, no Ogg pages
    # Opus: packets per (mode, coded bandwidth), read from each packet's TOC byte.
    bandwidths: Counter = field(default_factory=Counter)


class System:
    family: str  # "ours", "opus" or "codec2"; one line per family in the rate-distortion plot
    setting: str  # what was asked of it, e.g. "1.5 kbps" or "mode 3200"
    nominal_kbps: float
    # Samples by which the output lags the input, where known by construction (the evaluation
    # then removes exactly that); None: the evaluation measures it.
    delay: int | None = None

    @property
    def name(self) -> str:
        return f"{self.family} {self.setting}"

    def run(self, audio: np.ndarray) -> SystemOutput:
        raise NotImplementedError


class OurCodec(System):
    family = "ours"
    # The decoder's frames are centred on the encoder's, so output sample t renders input sample
    # t. Measuring it instead went wrong for the harmonic head: the search locked onto pitch
    # pulses and removed 6-8 ms, which cost STOI and mel distance.
    delay = 0

    def __init__(self, codec: Codec, kbps: float):
        self.codec = codec
        self.kbps = kbps
        self.levels = codec.num_levels(kbps)
        self.setting = f"{kbps:g} kbps"
        self.nominal_kbps = codec.config.bitrate(self.levels) / 1000

    def run(self, audio: np.ndarray) -> SystemOutput:
        encoded = self.codec.encode(torch.from_numpy(audio)[None], SAMPLE_RATE, bitrate=self.kbps)
        data = self.codec.to_bytes(encoded)
        decoded = self.codec.decode(encoded)[0, 0].numpy()
        return SystemOutput(decoded, len(data), self.codec.config.bitrate(encoded.num_levels))


class OurEntropyCodedCodec(OurCodec):
    """Our codec with its tokens entropy-coded by the prior (`codec encode --entropy`): charged
    the bytes of that file, and decoded from it, so the round trip is checked on every file."""

    family = "ours, entropy-coded"

    def __init__(self, codec: Codec, kbps: float, prior: TokenPrior, pitch: bool = False):
        super().__init__(codec, kbps)
        self.prior = prior
        self.pitch = pitch
        self.setting = f"{kbps:g} kbps + prior" + (" + pitch" if pitch else "")

    def run(self, audio: np.ndarray) -> SystemOutput:
        """With `pitch`, the file also carries the pitch side stream (`codec encode --entropy
        --pitch`), and the audio is decoded from the file's own bytes, pitch stream included."""
        encoded = self.codec.encode(torch.from_numpy(audio)[None], SAMPLE_RATE, bitrate=self.kbps, pitch=self.pitch)
        data = self.codec.to_bytes(encoded, self.prior)
        payload_bytes = bitstream.read_stream(data).payload_size
        back = self.codec.from_bytes(data, self.prior)
        if not torch.equal(back.codes, encoded.codes):
            raise RuntimeError("entropy decoding did not give back the encoded codes")
        decoded = self.codec.decode(back)[0, 0].numpy()
        return SystemOutput(decoded, len(data), payload_bytes * 8 * SAMPLE_RATE / len(audio))


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)


class Opus(System):
    family = "opus"

    def __init__(self, kbps: float):
        self.kbps = kbps
        self.setting = f"{kbps:g} kbps"
        self.nominal_kbps = float(kbps)

    def run(self, audio: np.ndarray) -> SystemOutput:
        with tempfile.TemporaryDirectory(prefix="eval-opus-") as tmp:
            wav, opus, out = Path(tmp, "in.wav"), Path(tmp, "out.opus"), Path(tmp, "out.wav")
            sf.write(wav, _to_int16(audio), SAMPLE_RATE, subtype="PCM_16")
            _run(["opusenc", "--bitrate", f"{self.kbps:g}", "--quiet", str(wav), str(opus)])
            _run(["opusdec", "--rate", str(SAMPLE_RATE), "--quiet", str(opus), str(out)])
            data = opus.read_bytes()
            decoded, rate = sf.read(out, dtype="float32", always_2d=True)
        assert rate == SAMPLE_RATE, rate
        packets = opus_audio_packets(data)
        payload_bps = sum(map(len, packets)) * 8 * SAMPLE_RATE / len(audio)
        return SystemOutput(decoded.mean(axis=1), len(data), payload_bps, opus_bandwidths(packets))


# Opus TOC byte: config = toc >> 3 gives the mode and the coded audio bandwidth (RFC 6716, 3.1).
_OPUS_CONFIGS = (
    [("SILK", "NB")] * 4
    + [("SILK", "MB")] * 4
    + [("SILK", "WB")] * 4
    + [("Hybrid", "SWB")] * 2
    + [("Hybrid", "FB")] * 2
    + [("CELT", "NB")] * 4
    + [("CELT", "WB")] * 4
    + [("CELT", "SWB")] * 4
    + [("CELT", "FB")] * 4
)


def ogg_packets(data: bytes) -> list[bytes]:
    """The packets of a single-stream Ogg file, in order."""
    packets, current, pos = [], b"", 0
    while pos + 27 <= len(data) and data[pos : pos + 4] == b"OggS":
        segments = data[pos + 26]
        lacing = data[pos + 27 : pos + 27 + segments]
        pos += 27 + segments
        for size in lacing:
            current += data[pos : pos + size]
            pos += size
            if size < 255:
                packets.append(current)
                current = b""
    return packets


def opus_audio_packets(data: bytes) -> list[bytes]:
    """The audio packets of an .opus file: its OpusHead and OpusTags packets left out."""
    return [p for p in ogg_packets(data) if p and not p.startswith((b"OpusHead", b"OpusTags"))]


def opus_bandwidths(packets: list[bytes]) -> Counter:
    """Packets per "MODE BW", e.g. "SILK WB", from each packet's TOC byte."""
    return Counter(" ".join(_OPUS_CONFIGS[packet[0] >> 3]) for packet in packets)


def _resample(audio: np.ndarray, source: int, target: int) -> np.ndarray:
    return AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), source, target).numpy()


class Codec2(System):
    family = "codec2"

    def __init__(self, mode: int):
        self.mode = mode
        self.setting = f"mode {mode}"
        self.nominal_kbps = mode / 1000

    def run(self, audio: np.ndarray) -> SystemOutput:
        with tempfile.TemporaryDirectory(prefix="eval-codec2-") as tmp:
            raw, bits, out = Path(tmp, "in.raw"), Path(tmp, "out.c2"), Path(tmp, "out.raw")
            raw.write_bytes(_to_int16(_resample(audio, SAMPLE_RATE, 8000)).tobytes())
            _run(["c2enc", str(self.mode), str(raw), str(bits)])
            _run(["c2dec", str(self.mode), str(bits), str(out)])
            num_bytes = bits.stat().st_size
            decoded = np.frombuffer(out.read_bytes(), dtype=np.int16).astype(np.float32) / 32768
        payload_bps = (num_bytes - CODEC2_HEADER_BYTES) * 8 * SAMPLE_RATE / len(audio)
        return SystemOutput(_resample(decoded, 8000, SAMPLE_RATE), num_bytes, payload_bps)


def missing_tools() -> dict[str, list[str]]:
    """Family -> the command-line tools it needs that are not on PATH."""
    needs = {"opus": ["opusenc", "opusdec"], "codec2": ["c2enc", "c2dec"]}
    return {family: [t for t in tools if shutil.which(t) is None] for family, tools in needs.items()}


def build_systems(
    codec: Codec | None,
    bitrates: list[float],
    baselines: bool = True,
    warn=print,
    entropy_bitrates: list[float] = (),
    prior: TokenPrior | None = None,
    pitch_bitrates: list[float] = (),
    opus_kbps: tuple[float, ...] = OPUS_KBPS,
    codec2_modes: tuple[int, ...] = CODEC2_MODES,
) -> list[System]:
    """Our codec at each bitrate (one per distinct number of levels), entropy-coded with `prior`
    at each of `entropy_bitrates`, then the baselines found at their settings."""
    systems: list[System] = []
    if codec is not None:
        seen: dict[int, float] = {}
        for kbps in bitrates:
            system = OurCodec(codec, kbps)
            if system.levels in seen:
                warn(
                    f"warning: {kbps:g} kbps gives the same {system.levels} levels as {seen[system.levels]:g} "
                    f"kbps; skipped"
                )
                continue
            seen[system.levels] = kbps
            systems.append(system)
        for kbps in entropy_bitrates if prior is not None else ():
            systems.append(OurEntropyCodedCodec(codec, kbps, prior))
        for kbps in pitch_bitrates if prior is not None else ():
            systems.append(OurEntropyCodedCodec(codec, kbps, prior, pitch=True))
    if not baselines:
        return systems
    missing = missing_tools()
    if missing["opus"]:
        warn(f"warning: {', '.join(missing['opus'])} not found; Opus skipped (apt-get install opus-tools)")
    else:
        systems += [Opus(kbps) for kbps in opus_kbps]
    if missing["codec2"]:
        warn(f"warning: {', '.join(missing['codec2'])} not found; Codec2 skipped (apt-get install codec2)")
    else:
        systems += [Codec2(mode) for mode in codec2_modes]
    return systems
