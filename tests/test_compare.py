"""training.compare pairs two evaluations' per-file scores and reports paired differences."""

import csv
import math

import pytest

from training.compare import paired_diffs, read_scores

FIELDS = ["file", "family", "setting", "pesq_wb", "stoi", "si_sdr", "mel_distance"]


def write(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def row(file, pesq, mel, family="ours", setting="3 kbps", stoi=""):
    return {
        "file": file,
        "family": family,
        "setting": setting,
        "pesq_wb": pesq,
        "stoi": stoi,
        "si_sdr": -20,
        "mel_distance": mel,
    }


def test_paired_differences_signs_and_pairing(tmp_path):
    old = write(
        tmp_path / "old.csv",
        [
            row("a", 1.0, 0.30),
            row("b", 2.0, 0.20),
            row("c", 1.5, 0.10, stoi=0.8),
            row("a", 3.0, 0.1, family="opus", setting="6 kbps"),
        ],
    )
    new = write(
        tmp_path / "new.csv",
        [row("a", 1.5, 0.20), row("b", 2.1, 0.25), row("c", 1.4, 0.05, stoi=0.9), row("d", 9.0, 0.0)],
    )
    diffs = {(d.setting, d.metric): d for d in paired_diffs(read_scores(new), read_scores(old))}
    # "d" has no old score and opus no new one: neither is paired.
    assert {s for s, _ in diffs} == {"3 kbps"}
    pesq = diffs["3 kbps", "pesq_wb"]
    assert pesq.files == 3
    assert pesq.mean == pytest.approx((0.5 + 0.1 - 0.1) / 3)
    d = [0.5, 0.1, -0.1]
    var = sum((x - pesq.mean) ** 2 for x in d) / 2
    assert pesq.stderr == pytest.approx(math.sqrt(var / 3))
    assert pesq.better == pytest.approx(2 / 3)
    # A lower mel distance is better.
    assert diffs["3 kbps", "mel_distance"].better == pytest.approx(2 / 3)
    # STOI was scored on one file only; empty cells are skipped, not read as zero.
    assert diffs["3 kbps", "stoi"].files == 1
    assert diffs["3 kbps", "stoi"].mean == pytest.approx(0.1)


def test_family_filter_and_bad_file(tmp_path):
    old = write(tmp_path / "old.csv", [row("a", 1.0, 0.3), row("a", 2.0, 0.3, family="opus")])
    new = write(tmp_path / "new.csv", [row("a", 1.2, 0.3), row("a", 2.5, 0.3, family="opus")])
    diffs = paired_diffs(read_scores(new), read_scores(old), family="opus")
    assert {d.family for d in diffs} == {"opus"}
    (tmp_path / "x.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(SystemExit):
        read_scores(tmp_path / "x.csv")
