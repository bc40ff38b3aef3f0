"""Ship a trained model: copy a run's checkpoint into codec/assets in half precision and write the
model card next to it from the run's own records (config, step, wall time, corpus manifest,
evaluation summary), so that the card says what the weights really are.

    python -m training.export --run runs/codec --manifest data/corpus/manifest.jsonl \
        [--init-run runs/codec_before] [--eval docs/eval] [--prior-run runs/prior]

--init-run names the run a warm-started run (`--init_from`) began from, so that the card counts
its steps and hours too. --eval is a folder written by training.evaluate (summary.csv, usage.csv)
and training.evaluate_prior (prior.csv); the tables found there go into the card.
--prior-fitted-to names the codec checkpoint whose tokens the prior was fitted to, when the
shipped codec was fine-tuned from it with the encoder and quantizer frozen (`training.train
--freeze encoder,quantizer`): the two must hold the same encoder and quantizer, tensor for
tensor, and the shipped prior then records the shipped codec as the one it models.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import torch
from safetensors import safe_open

from codec.api import BUNDLED_CHECKPOINT, Codec
from codec.checkpoint import content_digest, read_checkpoint
from codec.fixedpoint import IntegerPrior
from codec.prior_api import BUNDLED_PRIOR, TokenPrior

ASSETS = BUNDLED_CHECKPOINT.parent


def run_info(run: Path) -> dict:
    with safe_open(str(run / "state.safetensors"), framework="pt") as handle:
        return json.loads(handle.metadata()["training_state"])["info"]


def _score(val: dict) -> float:
    """How the trainers pick best.safetensors, as a number to minimise: lowest bits per token
    (prior); highest `quality` (codec, training.validate), or lowest mel distance where a record
    has none."""
    if "bits_per_token" in val:
        return val["bits_per_token"]
    if "quality" in val:
        return -val["quality"]
    return min(val["mel_distance"].values())


def best_validation(run: Path) -> dict | None:
    """The validation record of the run's best.safetensors (the first with the best score)."""
    info = run_info(run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    candidates = [r for r in records if "val" in r and r["step"] <= info["step"]]
    return min(candidates, key=lambda r: (_score(r["val"]), r["step"])) if candidates else None


def checkpoint_progress(run: Path, checkpoint: str) -> tuple[int, float]:
    """(steps, hours) of training behind a run's checkpoint file: for best.safetensors the step
    of its validation record and the wall time logged up to it (the prior trainer logs none: 0);
    for any other file the run's last saved state."""
    info = run_info(run)
    if checkpoint != "best.safetensors":
        return info["step"], info["elapsed"] / 3600
    step = best_validation(run)["step"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = [r["time"] for r in records if "time" in r and r["step"] <= step]
    return step, (times[-1] if times else 0.0) / 3600


def last_validation(run: Path) -> dict | None:
    result = None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "val" in record:
            result = record
    return result


def data_table(manifest: Path) -> list[str]:
    minutes: dict[tuple, float] = defaultdict(float)
    for line in manifest.read_text().splitlines():
        entry = json.loads(line)
        minutes[(entry["source_package"], entry["kind"], entry["license"], entry["split"])] += entry["duration"] / 60
    rows = ["| source package | kind | license | train min | val min |", "|---|---|---|---|---|"]
    for package, kind, license_ in sorted({k[:3] for k in minutes}):
        train, val = (
            minutes.get((package, kind, license_, "train"), 0),
            minutes.get((package, kind, license_, "val"), 0),
        )
        rows.append(f"| {package} | {kind} | {license_} | {train:.1f} | {val:.1f} |")
    return rows


def eval_table(path: Path) -> list[str]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return []
    columns = list(rows[0])
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + [
        "| " + " | ".join(row[c] for c in columns) + " |" for row in rows
    ]


def eval_section(folder: Path | None, name: str, title: str) -> list[str]:
    """Model-card lines: the title and the table of the evaluation CSV `name`, if it exists."""
    if folder is None or not (folder / name).exists():
        return []
    return [title, "", *eval_table(folder / name), ""]


def half_precision_id(path: Path) -> str:
    """The model id the codec checkpoint at `path` gets once stored in half precision, as export
    ships it: the digest of its tensors in float16 and of its config as stored. (Re-saving
    through `Codec.save` would write the config with fields added since, a different id.)"""
    checkpoint = read_checkpoint(path, "codec")
    tensors = {k: t.half() if t.is_floating_point() else t for k, t in checkpoint.tensors.items()}
    return f"{checkpoint.config['name']}:{content_digest('codec', checkpoint.config, tensors)[:12]}"


def retarget_prior(prior: TokenPrior, fitted_to_path: Path, shipped: Codec) -> TokenPrior:
    """`prior`, recorded as modelling the tokens of `shipped` instead of those of the codec at
    `fitted_to_path`. Refuses unless the prior was fitted to that codec (as stored, or as shipped
    in half precision) and both codecs hold the same encoder and quantizer in half precision,
    i.e. make the same tokens."""
    fitted_to = Codec.load(fitted_to_path)
    if prior.codec_model_id not in (fitted_to.model_id, half_precision_id(fitted_to_path)):
        raise SystemExit(f"the prior models tokens of {prior.codec_model_id}, not of {fitted_to.model_id}")
    old, new = fitted_to.model.state_dict(), shipped.model.state_dict()
    for name, tensor in old.items():
        if not name.startswith(("encoder.", "quantizer.")):
            continue
        a, b = (t.half() if t.is_floating_point() else t for t in (tensor, new[name]))
        if a.dtype != b.dtype or not torch.equal(a, b):
            raise SystemExit(
                f"{name} differs between the codecs: the shipped codec's tokens are not those the prior was fitted to"
            )
    model = IntegerPrior(dataclasses.replace(prior.config, codec_model_id=shipped.model_id))
    model.load_state_dict(prior.model.state_dict())
    return TokenPrior(model, prior.model_id)


EVAL_SECTIONS = {
    "## Evaluation (held-out speech, `python -m training.evaluate`)": "summary.csv",
    "## Codebook usage on the evaluation files": "usage.csv",
}


def refresh_card_evaluation(card: str, folder: Path) -> str:
    """`card` (a model card written by main) with its evaluation and codebook-usage tables
    replaced by those in `folder` (a new training.evaluate run of the same shipped model)."""
    lines = card.split("\n")
    for title, name in EVAL_SECTIONS.items():
        if title not in lines or not (folder / name).exists():
            raise SystemExit(f"cannot refresh {title!r}: not in the card, or no {folder / name}")
        start = lines.index(title) + 2  # the title, a blank line, then the table
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines[start:end] = eval_table(folder / name)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--checkpoint", default="best.safetensors", help="file in the run to ship")
    parser.add_argument("--manifest", type=Path)
    parser.add_argument(
        "--init-run",
        action="append",
        default=[],
        metavar="RUN[:FILE]",
        help="a run this one was warm-started from (its FILE, default last.safetensors), oldest first; repeatable",
    )
    parser.add_argument(
        "--earlier",
        action="append",
        default=[],
        metavar="STEPS:HOURS:LABEL",
        help="stages before the first --init-run whose runs are no longer on disk (counted as "
        "STEPS steps and HOURS hours, named LABEL; e.g. from the previous model card), oldest first",
    )
    parser.add_argument("--eval", type=Path, help="folder with summary.csv, usage.csv, prior.csv")
    parser.add_argument("--prior-run", type=Path, help="prior run whose best.safetensors ships too")
    parser.add_argument(
        "--prior-fitted-to",
        type=Path,
        metavar="CHECKPOINT",
        help="codec checkpoint whose tokens the prior was fitted to, if not the shipped one (decoder-only fine-tuning)",
    )
    parser.add_argument(
        "--refresh-eval",
        type=Path,
        metavar="FOLDER",
        help="only replace the bundled card's evaluation and usage tables with FOLDER's "
        "(a new evaluation of the same shipped model); --run and --manifest are then unused",
    )
    args = parser.parse_args(argv)
    if args.refresh_eval:
        card = ASSETS / "MODEL_CARD.md"
        card.write_text(refresh_card_evaluation(card.read_text(), args.refresh_eval))
        print(f"refreshed the evaluation tables of {card} from {args.refresh_eval}")
        return
    earlier = []  # checked before anything is written
    for entry in args.earlier:
        try:
            stage_steps, stage_hours, label = entry.split(":", 2)
            earlier.append((int(stage_steps), float(stage_hours), label))
        except ValueError:
            raise SystemExit(f"--earlier {entry!r}: expected STEPS:HOURS:LABEL") from None

    if args.run is None or args.manifest is None:
        parser.error("--run and --manifest are required (unless --refresh-eval)")
    ASSETS.mkdir(parents=True, exist_ok=True)
    source = args.run / args.checkpoint
    Codec.load(source).save(BUNDLED_CHECKPOINT, half=True)
    codec = Codec.load(BUNDLED_CHECKPOINT)
    val = best_validation(args.run) if args.checkpoint == "best.safetensors" else last_validation(args.run)
    own_steps, own_hours = checkpoint_progress(args.run, args.checkpoint)
    steps, hours = own_steps, own_hours
    stages = []
    for stage_steps, stage_hours, label in earlier:
        stages.append(f"{stage_steps} in {label}")
        steps, hours = steps + stage_steps, hours + stage_hours
    for entry in args.init_run:
        run, _, name = entry.partition(":")
        stage_steps, stage_hours = checkpoint_progress(Path(run), name or "last.safetensors")
        stages.append(f"{stage_steps} in {Path(run).name}")
        steps, hours = steps + stage_steps, hours + stage_hours
    history = ", then ".join(stages + [f"{own_steps} in {args.run.name}"])
    history = f"{history}, each warm-started from the one before" if stages else history
    config = codec.config
    params = sum(p.numel() for p in codec.model.parameters())
    train_config = json.loads((args.run / "config.json").read_text())["train"]
    adversarial = train_config["adversarial"]
    lambdas = {k: v for k, v in train_config["lambdas"].items() if k not in ("adv", "feat") or adversarial}
    q = config.quantizer
    lines = [
        f"# Model card: {codec.model_id}",
        "",
        f"A VQ-VAE speech and audio codec: convolutional encoder fed STFT log-magnitudes, {q.num_levels}-level "
        f"residual vector quantizer ({q.codebook_size} entries a level, nearest in L2 distance among {q.dim}-d "
        "entries, EMA codebooks), WaveNet decoder with an inverse-STFT head (pulse-train phase at a predicted "
        "f0 in voiced frames) and a linear latent -> log-magnitude path.",
        "",
        f"- parameters: {params / 1e6:.2f}M; "
        f"stored in half precision ({BUNDLED_CHECKPOINT.stat().st_size / 1e6:.1f} MB)",
        f"- sample rate {config.sample_rate} Hz mono, {config.frame_rate:g} frames/s, "
        f"bitrates {', '.join(f'{b:g}' for b in codec.bitrates())} kbps (1 to {config.quantizer.num_levels} levels)",
        f"- trained {steps} steps ({history}) of batch "
        f"{train_config['batch_size']} x {train_config['segment_seconds']} s "
        f"crops, {hours:.1f} h wall time on a 2-core CPU; shipped file: `{args.checkpoint}` of the run",
        f"- losses (last stage): {', '.join(f'{k} x {v}' for k, v in lambdas.items() if v)}"
        f"; adversarial training {'on' if train_config['adversarial'] else 'off'}"
        + (
            f"; the last stage kept the {' and '.join(train_config['freeze'].split(','))} frozen"
            if train_config.get("freeze")
            else ""
        ),
        "",
        "## Training data",
        "",
        *data_table(args.manifest),
        "",
        "Validation is held out by speaker group (locale, language, voice pack) or whole package.",
        "",
    ]
    if val:
        lines += [
            "## Validation during training of the shipped weights (120 s of held-out speech)",
            "",
            f"step {val['step']}: `{json.dumps(val['val'])}`",
            "",
        ]
    lines += eval_section(args.eval, "summary.csv", "## Evaluation (held-out speech, `python -m training.evaluate`)")
    lines += eval_section(args.eval, "usage.csv", "## Codebook usage on the evaluation files")
    if args.prior_run:
        prior = TokenPrior.load(args.prior_run / "best.safetensors")
        if args.prior_fitted_to:
            prior = retarget_prior(prior, args.prior_fitted_to, codec)
        prior.save(BUNDLED_PRIOR)  # integers: nothing to gain from half precision
        prior = TokenPrior.load(BUNDLED_PRIOR)
        prior_val = best_validation(args.prior_run)
        lines += [
            "## Token prior",
            "",
            f"- {prior.model_id}: {sum(t.numel() for t in prior.model.state_dict().values()) / 1e6:.2f}M integers, "
            f"{len(prior.config.dilations)} temporal layers x {prior.config.dim}, "
            f"{prior.config.receptive_field} frames of context",
            f"- shipped: the best of {run_info(args.prior_run)['step']} steps, "
            f"step {prior_val['step'] if prior_val else '?'}; "
            f"validation then: `{json.dumps(prior_val['val']) if prior_val else 'none'}`",
            "",
        ]
        lines += eval_section(args.eval, "prior.csv", "Held-out speech (`python -m training.evaluate_prior`):")
    (ASSETS / "MODEL_CARD.md").write_text("\n".join(lines))
    print(f"wrote {BUNDLED_CHECKPOINT} ({codec.model_id}) and {ASSETS / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
