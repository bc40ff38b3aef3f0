"""Figures of an evaluation: rate-distortion curves and side-by-side spectrograms.

matplotlib runs headless (Agg) and is imported only here, so the rest of the evaluation does
not need a display.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchaudio.functional as AF  # noqa: E402

SAMPLE_RATE = 16000
SPECTROGRAM_SECONDS = 4.0  # the start of each example clip that is drawn
# (summary field, axis label, higher is better)
METRICS = (
    ("pesq_wb", "PESQ-WB", True),
    ("stoi", "STOI", True),
    ("si_sdr", "SI-SDR (dB)", True),
    ("mel_distance", "log-mel L1 distance", False),
)
FAMILY_STYLE = {"ours": ("tab:red", "o"), "opus": ("tab:blue", "s"), "codec2": ("tab:green", "^")}


def rate_distortion(rows: list[dict], path: Path, title: str = "") -> None:
    """One panel per metric, kbps charged on a log x axis, one line per codec family.

    rows: summary rows with "family", "setting", "kbps" and the METRICS fields (None: missing).
    """
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.8))
    families = list(dict.fromkeys(row["family"] for row in rows))
    for ax, (key, label, higher) in zip(axes, METRICS):
        for family in families:
            points = sorted(
                (r["kbps"], r[key], r["setting"]) for r in rows if r["family"] == family and r[key] is not None
            )
            if not points:
                continue
            color, marker = FAMILY_STYLE.get(family, ("tab:gray", "x"))
            xs, ys, _ = zip(*points)
            ax.plot(xs, ys, color=color, marker=marker, label=family)
            for x, y, setting in points:
                ax.annotate(setting, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6, color=color)
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 4, 8, 16])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("kbps charged (file bytes)")
        ax.set_ylabel(label + (" (higher is better)" if higher else " (lower is better)"))
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class Example:
    name: str  # the clip's file name
    panels: list[tuple[str, np.ndarray]]  # (title, aligned audio [T] at 16 kHz), reference first


def log_mel_db(audio: np.ndarray, n_fft: int = 1024, hop: int = 160, n_mels: int = 80) -> np.ndarray:
    """[T] -> [n_mels, frames] power in dB."""
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs() ** 2
    fbank = AF.melscale_fbanks(
        n_fft // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
    )
    mel = fbank.T @ spec
    return (10 * torch.log10(mel.clamp(min=1e-10))).numpy()


def spectrograms(
    examples: list[Example], path: Path, max_seconds: float = SPECTROGRAM_SECONDS, range_db: float = 80.0
) -> None:
    """A grid, one row per clip and one column per system; each row shares the reference's scale."""
    columns = max(len(e.panels) for e in examples)
    fig, axes = plt.subplots(len(examples), columns, figsize=(3.4 * columns, 2.8 * len(examples)), squeeze=False)
    limit = int(max_seconds * SAMPLE_RATE)
    for row, example in zip(axes, examples):
        images = [(title, log_mel_db(audio[:limit])) for title, audio in example.panels]
        top = images[0][1].max()
        for column, (ax, (title, image)) in enumerate(zip(row, images)):
            seconds = image.shape[1] * 160 / SAMPLE_RATE
            shown = ax.imshow(
                image,
                origin="lower",
                aspect="auto",
                cmap="magma",
                vmin=top - range_db,
                vmax=top,
                extent=(0, seconds, 0, image.shape[0]),
            )
            ax.set_title(f"{Path(example.name).name}\n{title}" if column == 0 else title, fontsize=9)
            ax.set_xlabel("s")
        row[0].set_ylabel("mel bin")
        for ax in row[len(images) :]:
            ax.axis("off")
        fig.colorbar(shown, ax=row[len(images) - 1], label="dB")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
