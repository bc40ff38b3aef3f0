"""The quality targets: which setting of ours is held against which baseline, and when a target is met."""

from __future__ import annotations

from training import targets


def row(family, setting, kbps, **metrics):
    return {"family": family, "setting": setting, "kbps": kbps, **metrics}


CODEC2 = row("codec2", "mode 3200", 3.19, pesq_wb=1.3, stoi=0.89, dwer=0.70, dnsmos_ovrl=2.9)
OPUS = row("opus", "6 kbps", 7.0, pesq_wb=2.0, stoi=0.91, dwer=0.75)


def verdict(summary, index):
    return targets.check(summary, targets.TARGETS[index])


def test_a_setting_over_budget_is_not_considered_even_if_it_wins():
    summary = [CODEC2, row("ours", "1.5 kbps", 1.57, pesq_wb=2.5, stoi=0.95, dwer=0.1, dnsmos_ovrl=3.5)]
    result = verdict(summary, 0)
    assert result.setting is None and not result.met


def test_one_setting_must_beat_the_baseline_on_every_metric_together():
    # Each metric is beaten by some setting, but no setting beats all of them.
    summary = [
        CODEC2,
        row("ours", "1 kbps", 1.05, pesq_wb=1.5, stoi=0.85, dwer=0.5, dnsmos_ovrl=3.0),
        row("ours", "1.5 kbps", 1.45, pesq_wb=1.7, stoi=0.90, dwer=0.4, dnsmos_ovrl=2.7),
    ]
    result = verdict(summary, 0)
    assert not result.met
    assert result.setting.startswith("ours 1.5 kbps")  # 3 of 4 wins beats 3 of 4 on PESQ
    summary.append(row("ours +prior", "1.5 kbps", 1.2, pesq_wb=1.6, stoi=0.90, dwer=0.45, dnsmos_ovrl=2.95))
    result = verdict(summary, 0)
    assert result.met and result.setting.startswith("ours +prior 1.5 kbps")


def test_lower_is_better_for_word_error_rate():
    worse_dwer = row("ours", "3 kbps", 2.9, pesq_wb=2.2, stoi=0.92, dwer=0.80)
    assert not verdict([OPUS, worse_dwer], 1).met
    assert verdict([OPUS, {**worse_dwer, "dwer": 0.30}], 1).met


def test_fixed_levels_are_reached_at_or_above_them():
    assert verdict([row("ours", "6 kbps", 6.1, pesq_wb=2.8, stoi=0.93)], 2).met
    assert not verdict([row("ours", "6 kbps", 6.1, pesq_wb=2.79, stoi=0.95)], 2).met


def test_missing_metric_or_baseline_is_not_met_and_the_report_says_so():
    summary = [row("ours", "1.5 kbps", 1.4, pesq_wb=2.0, stoi=0.9, dwer=None, dnsmos_ovrl=3.0)]
    text = targets.report(summary)
    lines = text.splitlines()
    assert len(lines) == len(targets.TARGETS)
    assert "no setting of ours" in lines[0] and "NOT MET" in lines[0]  # no Codec2 row
    text = targets.report(summary + [CODEC2])
    assert "dwer n/a vs 0.700 no" in text.splitlines()[0] and text.splitlines()[0].endswith("NOT MET")
