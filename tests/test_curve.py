"""Learning curves from a run's metrics log."""

from __future__ import annotations

import json

import pytest

from training import curve


def val(quality, pesq, stoi, se=None):
    record = {"mel_distance": {}, "pesq_wb": {"1.5kbps": pesq}, "stoi": {"1.5kbps": stoi}, "quality": quality}
    if se is not None:
        record["standard_error"] = {"pesq_wb": {"1.5kbps": se}, "stoi": {"1.5kbps": se / 10}}
    return record


def test_each_validation_is_placed_at_the_run_clock_of_its_step(tmp_path):
    records = [
        {"step": 25, "loss": 1.0, "time": 90.0},
        {"step": 50, "loss": 1.0, "time": 180.0},
        {"step": 50, "val": val(10.0, 1.6, 0.84)},
        {"step": 75, "loss": 1.0, "time": 7200.0},  # resumed: the clock goes on from the saved total
        {"step": 100, "loss": 1.0, "time": 7290.0},
        {"step": 100, "val": val(10.2, 1.7, 0.85, se=0.05)},
        {"step": 110, "val": {"mel_distance": {}}},
    ]  # a validation without PESQ (no quality) is skipped
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = curve.read_curve(tmp_path)
    assert [(r["step"], r["hours"]) for r in rows] == [(50, 0.05), (100, pytest.approx(7290 / 3600, abs=1e-3))]
    assert rows[0]["pesq_wb@1.5kbps"] == 1.6 and "pesq_wb_se@1.5kbps" not in rows[0]
    assert rows[1]["stoi_se@1.5kbps"] == pytest.approx(0.005)


def test_main_draws_the_curves_and_writes_the_table(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    records = [
        {"step": 10, "loss": 1.0, "time": 36.0},
        {"step": 10, "val": val(10.0, 1.6, 0.84)},
        {"step": 20, "loss": 1.0, "time": 72.0},
        {"step": 20, "val": val(10.3, 1.8, 0.85)},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    curve.main(["--run", f"demo={run}", "--out", str(tmp_path / "lc")])
    assert (tmp_path / "lc.png").read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "lc.csv").read_text().splitlines()
    assert lines[0].startswith("run,step,hours,quality") and len(lines) == 3
    assert "best 10.300 at step 20" in capsys.readouterr().out
