"""Learning curves: each run's held-out validation scores against the CPU hours it has trained.

    python -m training.curve --run "decoder GAN=runs/gan2" --run "whole model=runs/full1" \\
        --start codec/assets/codec.safetensors --out docs/training/learning_curve

Reads the `val` records of each run's metrics.jsonl; a record's hours are the run's training clock
(`time` of the log record at the same step: wall time summed over resumes, validation included).
`--start` scores a checkpoint on the same validation clips that training uses (the corpus's
held-out speech, the first `--val-seconds`) and draws it at hour 0: where the runs started.
Writes OUT.png (PESQ-WB and STOI at each validation bitrate, and `quality`) and OUT.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from training.validate import BITRATES_KBPS  # noqa: E402

PANELS = (("pesq_wb", "PESQ-WB"), ("stoi", "STOI"), ("quality", "quality = PESQ + 10 STOI (means over bitrates)"))


def read_curve(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return curve_rows(records)


def curve_rows(records: list[dict]) -> list[dict]:
    """One row per validation record: step, hours, quality and each metric per bitrate (with
    standard errors where recorded)."""
    clock = {r["step"]: r["time"] for r in records if "time" in r}
    rows = []
    for record in records:
        val = record.get("val")
        if not val or "quality" not in val:
            continue
        before = [s for s in clock if s <= record["step"]]
        hours = clock[max(before)] / 3600 if before else 0.0
        row = {"step": record["step"], "hours": round(hours, 3), "quality": val["quality"]}
        for metric in ("pesq_wb", "stoi"):
            for key, value in val[metric].items():
                row[f"{metric}@{key}"] = value
                se = val.get("standard_error", {}).get(metric, {}).get(key)
                if se is not None:
                    row[f"{metric}_se@{key}"] = se
        rows.append(row)
    return rows


def start_point(checkpoint: str, manifest: str, val_seconds: float) -> dict:
    """The validation scores of a checkpoint, as a row at hour 0."""
    from codec import Codec
    from training.data import load_validation, read_manifest
    from training.validate import validate

    model = Codec.load(checkpoint).model.float()
    clips = load_validation(read_manifest(manifest, "val", ("speech",)), model.config.sample_rate, val_seconds)
    val = validate(model, clips)
    return curve_rows([{"step": 0, "val": val}])[0]


def plot(curves: dict[str, list[dict]], start: dict | None, path: Path) -> None:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4), constrained_layout=True)
    styles = ("-", "--", ":")
    for ax, (metric, label) in zip(axes, PANELS):
        keys = ["quality"] if metric == "quality" else [f"{metric}@{kbps}kbps" for kbps in BITRATES_KBPS]
        for color, (name, rows) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], curves.items()):
            for style, key in zip(styles, keys):
                points = [(0.0, start[key])] if start and key in start else []
                points += [(r["hours"], r[key]) for r in rows if key in r]
                if points:
                    xs, ys = zip(*points)
                    tag = "" if metric == "quality" else f" {key.split('@')[1]}"
                    ax.plot(xs, ys, style, color=color, marker=".", label=f"{name}{tag}")
        if start and metric == "quality":
            ax.axhline(start["quality"], color="grey", lw=0.8)
        ax.set_xlabel("training hours (2-core CPU, validation included)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=RUN_DIR")
    parser.add_argument("--start", help="checkpoint drawn at hour 0 (the runs' starting point)")
    parser.add_argument("--manifest", default="data/corpus/manifest.jsonl")
    parser.add_argument("--val-seconds", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=Path("docs/training/learning_curve"))
    args = parser.parse_args(argv)
    curves = {}
    for spec in args.run:
        label, _, folder = spec.rpartition("=")
        curves[label or folder] = read_curve(Path(folder))
    start = start_point(args.start, args.manifest, args.val_seconds) if args.start else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, start, args.out.with_suffix(".png"))
    rows = ([{"run": "start", **start}] if start else []) + [
        {"run": n, **r} for n, rows in curves.items() for r in rows
    ]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with args.out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)
    for name, rows_ in curves.items():
        if rows_:
            last, top = rows_[-1], max(rows_, key=lambda r: r["quality"])
            print(
                f"{name}: {len(rows_)} validations, {last['hours']:.2f} h; last quality {last['quality']:.3f}, "
                f"best {top['quality']:.3f} at step {top['step']}"
            )
    if start:
        print(f"start: quality {start['quality']:.3f}")
    print(f"wrote {args.out.with_suffix('.png')}, {args.out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
