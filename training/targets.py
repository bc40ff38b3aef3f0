"""The quality targets the codec is held to, checked against an evaluation summary.

Each target compares our best setting within a bitrate budget (charged: file bytes over duration,
pooled over the files) with a baseline on a list of metrics, or asks for a fixed level. "Best"
is the setting that wins on the most of the target's metrics, ties broken by PESQ-WB, so one
setting must beat the baseline on all of them together.
"""

from __future__ import annotations

from dataclasses import dataclass

# Higher is better for all but these.
LOWER_IS_BETTER = {"dwer", "mel_distance", "kbps"}


@dataclass(frozen=True)
class Target:
    name: str
    max_kbps: float  # our settings charged at most this
    metrics: tuple[str, ...]
    baseline: tuple[str, str] | None = None  # (family, setting) to beat
    levels: tuple[float, ...] = ()  # or: at least these values (at most, for LOWER_IS_BETTER)


TARGETS = (
    Target("<= 1.5 kbps beats Codec2 3200", 1.5, ("pesq_wb", "stoi", "dwer", "dnsmos_ovrl"), ("codec2", "mode 3200")),
    Target("<= 3 kbps beats Opus 6 kbps", 3.0, ("pesq_wb", "stoi", "dwer"), ("opus", "6 kbps")),
    Target("6 kbps reaches EnCodec's published 6 kbps", 6.5, ("pesq_wb", "stoi"), levels=(2.8, 0.93)),
)


@dataclass(frozen=True)
class Verdict:
    target: Target
    setting: str | None  # ours, "family setting (kbps charged)"; None: no setting within budget
    ours: dict[str, float | None]
    theirs: dict[str, float | None]  # the baseline's values or the levels asked for
    met: bool


def _better(metric: str, ours: float | None, theirs: float | None) -> bool:
    if ours is None or theirs is None:
        return False
    return ours < theirs if metric in LOWER_IS_BETTER else ours > theirs


def _reaches(metric: str, ours: float | None, level: float) -> bool:
    if ours is None:
        return False
    return ours <= level if metric in LOWER_IS_BETTER else ours >= level


def check(summary: list[dict], target: Target) -> Verdict:
    ours = [r for r in summary if r["family"].startswith("ours") and r["kbps"] <= target.max_kbps]
    if target.baseline:
        base = next((r for r in summary if (r["family"], r["setting"]) == target.baseline), None)
        if base is None:
            return Verdict(target, None, {}, {}, False)
        theirs = {m: base.get(m) for m in target.metrics}
        wins = lambda r: sum(_better(m, r.get(m), theirs[m]) for m in target.metrics)  # noqa: E731
    else:
        theirs = dict(zip(target.metrics, target.levels))
        wins = lambda r: sum(_reaches(m, r.get(m), theirs[m]) for m in target.metrics)  # noqa: E731
    if not ours:
        return Verdict(target, None, {}, theirs, False)
    best = max(ours, key=lambda r: (wins(r), r.get("pesq_wb") or 0.0))
    return Verdict(
        target,
        f"{best['family']} {best['setting']} ({best['kbps']:.2f} kbps)",
        {m: best.get(m) for m in target.metrics},
        theirs,
        wins(best) == len(target.metrics),
    )


def report(summary: list[dict]) -> str:
    """One line per target: our best setting, each metric against the baseline, met or not."""
    lines = []
    for target in TARGETS:
        verdict = check(summary, target)
        if verdict.setting is None:
            lines.append(f"{target.name}: no setting of ours within {target.max_kbps:g} kbps (or no baseline): NOT MET")
            continue
        parts = []
        for metric in target.metrics:
            ours, theirs = verdict.ours.get(metric), verdict.theirs.get(metric)
            ok = _better(metric, ours, theirs) if target.baseline else _reaches(metric, ours, theirs)
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            parts.append(f"{metric} {fmt(ours)} vs {fmt(theirs)} {'yes' if ok else 'no'}")
        lines.append(f"{target.name}: {verdict.setting}: {', '.join(parts)}: {'MET' if verdict.met else 'NOT MET'}")
    return "\n".join(lines)
