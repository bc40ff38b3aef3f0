"""Paired per-file comparison of two evaluation runs: did a new model really move each metric?

    python -m training.compare NEW/per_file.csv OLD/per_file.csv [--family ours]

Both files are `training.evaluate` outputs (`per_file.csv`). Rows are paired by (file, family,
setting); for every setting both runs scored, and every metric, it prints the mean of new - old,
the standard error of that mean, and the share of files where the new run is better (higher is
better except for the log-mel distance). Pairing removes the spread between files, which is far
larger than most changes between models.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path

METRICS = {
    "pesq_wb": 1,
    "stoi": 1,
    "si_sdr": 1,
    "mel_distance": -1,  # +1: higher is better
    "dnsmos_ovrl": 1,
    "spk_sim": 1,
}  # (per-file dWER is too noisy to pair: pooled in summaries)


@dataclass(frozen=True)
class PairedDiff:
    family: str
    setting: str
    metric: str
    files: int
    mean: float  # mean of new - old
    stderr: float
    better: float  # share of files where new is better


def read_scores(path: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    """Scores keyed by (file, family, setting); empty cells (a metric skipped on that file) are left out."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "file" not in rows[0]:
        raise SystemExit(f"{path}: not a per_file.csv from training.evaluate")
    return {
        (r["file"], r["family"], r["setting"]): {m: float(r[m]) for m in METRICS if r.get(m) not in (None, "")}
        for r in rows
    }


def paired_diffs(new: dict, old: dict, family: str | None = None) -> list[PairedDiff]:
    settings: dict[tuple[str, str], list[str]] = {}
    for file, fam, setting in new:
        if (file, fam, setting) in old and (family is None or fam == family):
            settings.setdefault((fam, setting), []).append(file)
    out = []
    for (fam, setting), files in settings.items():
        for metric, sign in METRICS.items():
            d = [
                new[f, fam, setting][metric] - old[f, fam, setting][metric]
                for f in files
                if metric in new[f, fam, setting] and metric in old[f, fam, setting]
            ]
            if not d:
                continue
            mean = sum(d) / len(d)
            var = sum((x - mean) ** 2 for x in d) / max(len(d) - 1, 1)
            better = sum(1 for x in d if sign * x > 0) / len(d)
            out.append(PairedDiff(fam, setting, metric, len(d), mean, math.sqrt(var / len(d)), better))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("new", type=Path)
    parser.add_argument("old", type=Path)
    parser.add_argument("--family", default=None, help="only this family of systems (e.g. 'ours')")
    args = parser.parse_args()
    diffs = paired_diffs(read_scores(args.new), read_scores(args.old), args.family)
    if not diffs:
        raise SystemExit("the two runs share no (file, system, setting)")
    print(f"{'system':<22} {'setting':<18} {'metric':<13} {'files':>5} {'new - old':>10} {'stderr':>8} {'better':>7}")
    for d in diffs:
        print(
            f"{d.family:<22} {d.setting:<18} {d.metric:<13} {d.files:>5} {d.mean:>+10.4f} {d.stderr:>8.4f} "
            f"{d.better:>7.1%}"
        )


if __name__ == "__main__":
    main()
