"""Training data: the corpus manifest loaded into memory, served as random crops.

The whole corpus is held as 16-bit samples (an hour is 115 MB), so a crop costs a slice, not a
file read. Crops are drawn with a `torch.Generator` whose state is saved in training checkpoints,
so a resumed run sees exactly the crops the uninterrupted run would have seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm


@dataclass(frozen=True)
class Clip:
    path: str
    kind: str  # speech, tts or music
    group: str
    duration: float


def read_manifest(manifest: str | Path, split: str, kinds: tuple[str, ...] | None = None) -> list[Clip]:
    """Entries of one split of a corpus manifest (JSON lines written by training.corpus)."""
    manifest = Path(manifest)
    clips = []
    with manifest.open() as handle:
        for line in handle:
            entry = json.loads(line)
            if entry["split"] != split or (kinds and entry["kind"] not in kinds):
                continue
            path = entry["path"] if Path(entry["path"]).is_absolute() else str(manifest.parent / entry["path"])
            clips.append(Clip(path, entry["kind"], entry.get("group", ""), float(entry["duration"])))
    return clips


def load_clip(path: str, sample_rate: int) -> np.ndarray:
    """Mono int16 samples of a corpus file (already at sample_rate)."""
    data, rate = sf.read(path, dtype="int16", always_2d=True)
    if rate != sample_rate:
        raise ValueError(f"{path} is {rate} Hz, expected {sample_rate} Hz: rebuild the corpus")
    return data.mean(axis=1).astype(np.int16) if data.shape[1] > 1 else data[:, 0]


@dataclass(frozen=True)
class Augment:
    """Random recording-chain changes to a training crop, so that the codec does not learn one
    microphone, room tone or level. With probability `probability` a crop gets a random spectral
    tilt (a low shelf below 90-350 Hz and a high shelf above 2-5.7 kHz, each +-`eq_db`), a peaking
    band anywhere from 200 Hz to 5 kHz, and with half that
    probability background noise (white or brown) at `snr_db`. The codec is trained to
    reconstruct the augmented crop: the aim is robustness to inputs, not enhancement."""

    probability: float = 0.0
    sample_rate: int = 16000
    eq_db: float = 6.0
    snr_db: tuple[float, float] = (20.0, 45.0)

    def __call__(self, wav: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """wav [T] -> [T]; draws from `g` only, so a resumed run sees the same crops."""
        if self.probability <= 0 or float(torch.rand((), generator=g)) >= self.probability:
            return wav
        u = torch.rand(7, generator=g, dtype=torch.float64)
        # One smooth gain curve over log-frequency, applied in the frequency domain (a tenth of
        # the time of three biquads): two shelves and a peak.
        octaves = torch.log2(
            torch.fft.rfftfreq(len(wav), 1 / self.sample_rate, dtype=torch.float64).clamp_min(20) / 1000
        )
        low = (2 * u[0] - 1) * self.eq_db * torch.sigmoid(-4 * (octaves - (-2.5 + 1.5 * u[1])))
        high = (2 * u[2] - 1) * self.eq_db * torch.sigmoid(4 * (octaves - (1 + 1.5 * u[3])))
        peak = (2 * u[4] - 1) * self.eq_db * torch.exp(-0.5 * ((octaves - (-2.3 + 5 * u[5])) / (0.3 + u[6])) ** 2)
        gain = (10 ** ((low + high + peak) / 20)).float()
        out = torch.fft.irfft(torch.fft.rfft(wav) * gain, n=len(wav))
        if float(torch.rand((), generator=g)) < 0.5:
            noise = torch.randn(wav.shape, generator=g)
            if float(torch.rand((), generator=g)) < 0.5:  # brown: hum and rumble rather than hiss
                noise = torch.cumsum(noise, 0)
                noise = noise - torch.linspace(float(noise[0]), float(noise[-1]), len(noise))
            low, high = self.snr_db
            snr = low + (high - low) * float(torch.rand((), generator=g))
            power = out.pow(2).mean().clamp_min(1e-10)
            out = out + noise * (power / noise.pow(2).mean().clamp_min(1e-20) / 10 ** (snr / 10)).sqrt()
        return out


class CropSampler:
    """Random fixed-length crops from in-memory clips, drawn per kind with fixed weights."""

    def __init__(
        self,
        clips: list[Clip],
        sample_rate: int,
        segment: int,
        kind_weights: dict[str, float],
        seed: int,
        gain_db: tuple[float, float] = (-20.0, 0.0),
        augment: Augment = Augment(),
        progress: bool = True,
    ):
        self.segment = segment
        self.gain_db = gain_db
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)
        self.audio: dict[str, list[np.ndarray]] = {}
        for clip in tqdm(clips, desc="loading corpus", disable=not progress, unit="file"):
            self.audio.setdefault(clip.kind, []).append(load_clip(clip.path, sample_rate))
        self.kinds = sorted(k for k in self.audio if kind_weights.get(k, 0) > 0)
        if not self.kinds:
            raise ValueError(f"no training audio of the kinds {sorted(kind_weights)}")
        self.kind_probs = torch.tensor([kind_weights[k] for k in self.kinds], dtype=torch.float64)
        self.lengths = {k: torch.tensor([len(a) for a in self.audio[k]], dtype=torch.float64) for k in self.kinds}

    @property
    def seconds(self) -> dict[str, float]:
        return {k: float(v.sum()) for k, v in self.lengths.items()}

    def _crop(self) -> torch.Tensor:
        g = self.generator
        kind = self.kinds[int(torch.multinomial(self.kind_probs, 1, generator=g))]
        index = int(torch.multinomial(self.lengths[kind], 1, generator=g))
        audio = self.audio[kind][index]
        out = np.zeros(self.segment, dtype=np.float32)
        if len(audio) >= self.segment:
            start = int(torch.randint(0, len(audio) - self.segment + 1, (1,), generator=g))
            out[:] = audio[start : start + self.segment]
        else:
            start = int(torch.randint(0, self.segment - len(audio) + 1, (1,), generator=g))
            out[start : start + len(audio)] = audio
        wav = self.augment(torch.from_numpy(out) / 32768.0, g)
        # Random level: the codec must work for quiet and loud input alike.
        peak = wav.abs().max().clamp_min(1e-4)
        low, high = self.gain_db
        gain_db = low + (high - low) * float(torch.rand((), generator=g))
        return wav / peak * 0.95 * 10 ** (gain_db / 20)

    def batch(self, size: int) -> torch.Tensor:
        """A batch of crops [size, 1, segment]."""
        return torch.stack([self._crop() for _ in range(size)])[:, None]


def load_validation(clips: list[Clip], sample_rate: int, max_seconds: float) -> list[torch.Tensor]:
    """Validation clips [1, 1, T] in manifest order, up to max_seconds in all."""
    out, total = [], 0.0
    for clip in clips:
        if total >= max_seconds:
            break
        wav = torch.from_numpy(load_clip(clip.path, sample_rate).astype(np.float32) / 32768.0)
        out.append(wav[None, None])
        total += wav.shape[-1] / sample_rate
    return out
