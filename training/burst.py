"""A training burst on a borrowed GPU: pack the current run small, train it there, bring it back.

    python -m training.burst pack --run runs/gan2                 # here: writes burst/ (git-ignored)
    python -m training.burst run --minutes 8 --out "$OUT"         # there, from the repo root
    python -m training.burst merge "$FILES_AT" --run runs/gan2    # here: runs/gan2_burst/*.safetensors

What travels to the GPU machine is the working tree (the bundled model included) plus `burst/`,
64 MiB in all, so `pack` sends only what the bundled model does not already hold:
- the run's last weights, float16, only for tensors that differ from the bundled model's (a
  decoder-only fine-tune sends the decoder alone), and the discriminator's;
- a seeded draw of the run's training audio, re-encoded as 16 kHz Opus at `--kbps` (the run's
  kind weights decide each kind's share), as much as fits the budget that is left;
- wheels for the packages a stock PyTorch CUDA image lacks (soundfile, torch-pesq and their needs);
- the run's TrainConfig (burst/train.json); `run` overrides only where the run goes, the clock,
  the batch size and the precision (bf16).
`run` rebuilds the full checkpoint from the bundled model, trains from it (optimizer moments start
afresh: they would not fit) and writes the weights that changed, float16, to --out. `merge` turns
those back into inference checkpoints here, from which the CPU run continues (`--init_from` and
`--init_discriminator`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from codec.api import Codec
from training.data import read_manifest
from training.train import TrainConfig, train

BUDGET_BYTES = 64 * 2**20  # what may travel: working tree and carried paths together
WHEELS = ("soundfile", "cffi", "pycparser", "torch-pesq==0.1.2", "torchtyping==0.1.5", "typeguard==2.13.3")
PACK = Path("burst")


def tracked_bytes() -> int:
    """Bytes of the files git would send: tracked, and untracked but not ignored."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True, check=True
    ).stdout.split(b"\0")
    return sum(Path(n.decode()).stat().st_size for n in names if n and Path(n.decode()).is_file())


def changed_tensors(weights: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float16 copies of the tensors of `weights` that differ from `base` in float16."""
    changed = {}
    for name, tensor in weights.items():
        small = tensor.half() if tensor.is_floating_point() else tensor
        reference = base[name].half() if base[name].is_floating_point() else base[name]
        if small.shape != reference.shape or not torch.equal(small, reference):
            changed[name] = small.contiguous()
    return changed


def download_wheels(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux2014_x86_64",
            "-d",
            str(folder),
            *WHEELS,
        ],
        check=True,
    )


def pack_audio(config: TrainConfig, out: Path, budget: int, kbps: float, seed: int) -> float:
    """Opus copies of a seeded draw of training clips, each kind's share of `budget` bytes by the
    run's kind weights; writes out/manifest.jsonl; returns the minutes packed."""
    clips = read_manifest(config.manifest, "train")
    weights = {k: w for k, w in config.kind_weights.items() if w > 0 and any(c.kind == k for c in clips)}
    total_weight = sum(weights.values())
    (out / "audio").mkdir(parents=True, exist_ok=True)
    entries, minutes = [], 0.0
    for kind, weight in weights.items():
        allowance = budget * weight / total_weight
        pool = [c for c in clips if c.kind == kind]
        random.Random(f"{seed}/{kind}").shuffle(pool)
        used = 0
        for i, clip in enumerate(pool):
            path = out / "audio" / f"{kind}_{i:05d}.opus"
            subprocess.run(["opusenc", "--quiet", "--bitrate", str(kbps), clip.path, str(path)], check=True)
            size = path.stat().st_size
            if used + size > allowance:
                path.unlink()
                break
            used += size
            minutes += clip.duration / 60
            entries.append(
                {
                    "path": f"audio/{path.name}",
                    "kind": kind,
                    "group": clip.group,
                    "duration": clip.duration,
                    "split": "train",
                }
            )
    (out / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return minutes


def pack(args: argparse.Namespace) -> None:
    run = args.run
    config = TrainConfig(**json.loads((run / "config.json").read_text())["train"])
    out = args.out
    if out.exists():
        raise SystemExit(f"{out} exists; remove it first")
    out.mkdir(parents=True)
    download_wheels(out / "wheels")
    state = load_file(run / "state.safetensors")
    prefix = "module.discriminator/"
    discriminator = {
        k[len(prefix) :]: v.half() if v.is_floating_point() else v for k, v in state.items() if k.startswith(prefix)
    }
    if discriminator:
        save_file(discriminator, out / "discriminator.safetensors")
    weights = Codec.load(run / "last.safetensors").model.state_dict()
    save_file(changed_tensors(weights, Codec.load(args.base).model.state_dict()), out / "weights.safetensors")
    (out / "train.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    used = tracked_bytes() + sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    minutes = pack_audio(config, out, BUDGET_BYTES - used - args.margin_mib * 2**20, args.kbps, args.seed)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(
        f"{out}: {size / 2**20:.1f} MiB ({minutes:.1f} min of audio at {args.kbps:g} kbps); "
        f"with the working tree {(size + tracked_bytes()) / 2**20:.1f} of {BUDGET_BYTES / 2**20:.0f} MiB"
    )


def run_burst(args: argparse.Namespace) -> None:
    """On the GPU machine: train from the bundled model plus the packed weights for --minutes."""
    pack_dir, out = args.pack.resolve(), args.out
    out.mkdir(parents=True, exist_ok=True)
    codec = Codec.load(args.base)
    state = codec.model.state_dict()
    state.update({k: v.to(state[k].dtype) for k, v in load_file(pack_dir / "weights.safetensors").items()})
    codec.model.load_state_dict(state)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    codec.save(work / "init.safetensors")
    config = TrainConfig(**json.loads((pack_dir / "train.json").read_text()))
    has_discriminator = (pack_dir / "discriminator.safetensors").exists()
    config = dataclasses.replace(
        config,
        manifest=str(pack_dir / "manifest.jsonl"),
        run_dir=str(work / "run"),
        init_from=str(work / "init.safetensors"),
        init_discriminator=str(pack_dir / "discriminator.safetensors") if has_discriminator else "",
        max_minutes=args.minutes,
        precision="bf16",
        batch_size=args.batch_size,
        threads=0,
        val_every=10**9,
        save_every=10**9,
        steps=10**9,
        log_every=args.log_every,
    )
    started = time.time()
    train(config)
    run_dir = Path(config.run_dir)
    trained = Codec.load(run_dir / "last.safetensors").model.state_dict()
    save_file(changed_tensors(trained, Codec.load(args.base).model.state_dict()), out / "weights.safetensors")
    if has_discriminator:
        state = load_file(run_dir / "state.safetensors")
        prefix = "module.discriminator/"
        save_file(
            {k[len(prefix) :]: v.half() for k, v in state.items() if k.startswith(prefix)},
            out / "discriminator.safetensors",
        )
    (out / "metrics.jsonl").write_bytes((run_dir / "metrics.jsonl").read_bytes())
    print(f"burst: {time.time() - started:.0f} s; wrote {', '.join(sorted(p.name for p in out.iterdir()))}")


def merge(args: argparse.Namespace) -> None:
    """Here: the burst's weights on the bundled model, as inference checkpoints to continue from."""
    codec = Codec.load(args.base)
    state = codec.model.state_dict()
    state.update({k: v.to(state[k].dtype) for k, v in load_file(args.result / "weights.safetensors").items()})
    codec.model.load_state_dict(state)
    target = args.run.with_name(args.run.name + "_burst")
    target.mkdir(parents=True, exist_ok=True)
    codec.save(target / "init.safetensors")
    command = f"--init_from {target / 'init.safetensors'}"
    if (args.result / "discriminator.safetensors").exists():
        discriminator = load_file(args.result / "discriminator.safetensors")
        save_file({k: v.float() for k, v in discriminator.items()}, target / "discriminator.safetensors")
        command += f" --init_discriminator {target / 'discriminator.safetensors'}"
    (target / "metrics.burst.jsonl").write_bytes((args.result / "metrics.jsonl").read_bytes())
    print(f"{target}: continue with training.train ... --run_dir NEW_RUN {command}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write burst/ from a run")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--out", type=Path, default=PACK)
    p.add_argument("--kbps", type=float, default=20.0)
    p.add_argument("--margin-mib", type=float, default=1.0, help="left free under the 64 MiB budget")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("run", help="on the GPU machine: train from the pack")
    p.add_argument("--pack", type=Path, default=PACK)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", default="/tmp/burst")
    p = sub.add_parser("merge", help="here: turn the burst's output into checkpoints to continue from")
    p.add_argument("result", type=Path)
    p.add_argument("--run", type=Path, required=True)
    for p in sub.choices.values():
        p.add_argument(
            "--base", type=Path, help="the model the pack's weights are changes to (default: the bundled one)"
        )
    args = parser.parse_args(argv)
    {"pack": pack, "run": run_burst, "merge": merge}[args.command](args)


if __name__ == "__main__":
    main()
