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
        progress: bool = True,
    ):
        self.segment = segment
        self.gain_db = gain_db
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
        wav = torch.from_numpy(out) / 32768.0
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
