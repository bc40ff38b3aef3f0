"""An evaluation's results: a Row per file and system, and the tables made of them.

`summarize` turns the rows into one line per system: PESQ-WB, STOI, SI-SDR, mel distance, DNSMOS
and speaker similarity are means over files; dWER is pooled (all files' word errors over all
their reference words, as codec papers report it); kbps are totals over durations. Where the
perceptual metrics ran, a "reference" line first gives the originals' own DNSMOS, the ceiling
for every system.
"""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training import perceptual


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
    # training.perceptual.PerceptualScores; None: --no-perceptual, or that score does not apply
    dwer: float | None = None  # this file's own; the summary pools word errors over files
    dnsmos_sig: float | None = None
    dnsmos_bak: float | None = None
    dnsmos_ovrl: float | None = None
    spk_sim: float | None = None
    listen_s: float = 0.0  # time spent on the perceptual metrics


@dataclass
class FileResult:
    rows: list[Row]
    bandwidths: dict[str, Counter]  # system name -> Opus packets per mode and bandwidth
    reference: perceptual.Dnsmos | None = None  # the original's DNSMOS; None: --no-perceptual
    # system name -> (the ASR's transcript of the original, of the system's output); English files only
    transcripts: dict[str, tuple[str, str]] = field(default_factory=dict)


def bandwidth_note(counts: Counter) -> str:
    total = sum(counts.values())
    return ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in counts.most_common()) if total else ""


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(results: list[FileResult]) -> list[dict]:
    """One row per system, in the order systems first appear, after the originals' own DNSMOS
    (the "reference" row) where the perceptual metrics ran. dWER is pooled: all files' word
    errors over all their reference words."""
    rows = [row for result in results for row in result.rows]
    summary = []
    for family, setting in dict.fromkeys((r.family, r.setting) for r in rows):
        group = [r for r in rows if (r.family, r.setting) == (family, setting)]
        seconds = sum(r.seconds for r in group)
        name = f"{family} {setting}"
        bandwidths = sum((result.bandwidths.get(name, Counter()) for result in results), Counter())
        # (original, output) transcripts of the English files; an empty original has no words to miss
        pairs = [result.transcripts[name] for result in results if result.transcripts.get(name, ("",))[0]]
        summary.append(
            {
                "family": family,
                "setting": setting,
                "files": len(group),
                "minutes": seconds / 60,
                "kbps": sum(r.bytes for r in group) * 8 / seconds / 1000,
                "payload_kbps": sum(r.payload_kbps * r.seconds for r in group) / seconds,
                "pesq_wb": _mean([r.pesq_wb for r in group]),
                "pesq_skipped": sum(r.pesq_wb is None for r in group),
                "stoi": _mean([r.stoi for r in group]),
                "stoi_skipped": sum(r.stoi is None for r in group),
                "si_sdr": _mean([r.si_sdr for r in group]),
                "mel_distance": _mean([r.mel_distance for r in group]),
                "dwer": perceptual.dwer([original for original, _ in pairs], [output for _, output in pairs]),
                "dwer_files": len(pairs),
                "dwer_words": sum(len(original.split()) for original, _ in pairs),
                "dnsmos_sig": _mean([r.dnsmos_sig for r in group]),
                "dnsmos_bak": _mean([r.dnsmos_bak for r in group]),
                "dnsmos_ovrl": _mean([r.dnsmos_ovrl for r in group]),
                "spk_sim": _mean([r.spk_sim for r in group]),
                "lag_ms": statistics.median(r.lag_ms for r in group),
                "bandwidth": bandwidth_note(bandwidths),
                "codec_s": sum(r.codec_s for r in group),
                "score_s": sum(r.score_s for r in group),
                "listen_s": sum(r.listen_s for r in group),
            }
        )
    originals = [(result.rows[0].seconds, result.reference) for result in results if result.reference and result.rows]
    if originals:
        summary.insert(
            0,
            dict.fromkeys(summary[0])
            | {
                "family": "reference",
                "setting": "original",
                "files": len(originals),
                "minutes": sum(seconds for seconds, _ in originals) / 60,
                **{f"dnsmos_{key}": _mean([getattr(d, key) for _, d in originals]) for key in ("sig", "bak", "ovrl")},
            },
        )
    return summary


def format_table(summary: list[dict]) -> str:
    def num(value, spec):
        return "-" if value is None else format(value, spec)

    header = (
        f"{'codec':<9} {'setting':<10} {'kbps':>6} {'payload':>7} {'PESQ-WB':>7} {'STOI':>6} "
        f"{'SI-SDR':>7} {'mel':>6} {'dWER%':>6} {'SIG':>5} {'BAK':>5} {'OVRL':>5} {'spk':>5} {'lag ms':>7}  note"
    )
    lines = [header, "-" * len(header)]
    for s in summary:
        notes = [s["bandwidth"]] if s["bandwidth"] else []
        if s["pesq_skipped"]:
            notes.append(f"PESQ skipped on {s['pesq_skipped']} file(s)")
        if s["stoi_skipped"]:
            notes.append(f"STOI skipped on {s['stoi_skipped']} file(s)")
        if s["dwer_files"]:
            notes.append(f"dWER over {s['dwer_files']} file(s), {s['dwer_words']} words")
        dwer = None if s["dwer"] is None else 100 * s["dwer"]
        lines.append(
            f"{s['family']:<9} {s['setting']:<10} {num(s['kbps'], '6.2f'):>6} {num(s['payload_kbps'], '7.2f'):>7} "
            f"{num(s['pesq_wb'], '7.3f'):>7} {num(s['stoi'], '6.3f'):>6} {num(s['si_sdr'], '7.2f'):>7} "
            f"{num(s['mel_distance'], '6.3f'):>6} {num(dwer, '6.1f'):>6} {num(s['dnsmos_sig'], '5.2f'):>5} "
            f"{num(s['dnsmos_bak'], '5.2f'):>5} {num(s['dnsmos_ovrl'], '5.2f'):>5} {num(s['spk_sim'], '5.3f'):>5} "
            f"{num(s['lag_ms'], '7.2f'):>7}  {'; '.join(notes)}"
        )
    return "\n".join(lines)


def write_csv(path: Path, records: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in records)
