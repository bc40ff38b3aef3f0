"""Train the token prior on the codes the codec gives for real audio (from `codec tokenize`).

    codec tokenize data/corpus/manifest.jsonl tokens/train --split train
    codec tokenize data/corpus/manifest.jsonl tokens/val --split val
    python -m training.train_prior --train_tokens tokens/train --val_tokens tokens/val --run_dir runs/prior

Any PriorTrainConfig field can be overridden as `--field value`. Resumes exactly from
`run_dir/state.safetensors`; writes `best.safetensors` (lowest validation bits per token),
`last.safetensors` and `metrics.jsonl`. The saved priors are the integer networks that
inference runs (codec.fixedpoint); the float network and its optimizer live in the state file.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from codec.fixedpoint import IntegerPrior
from codec.prior import PriorConfig, PriorNet, bits
from codec.prior_api import TokenPrior
from codec.tokenize import load_tokens
from training.state import load_training_state, save_training_state
from training.step import autocast
from training.train import learning_rate_factor, parse_overrides


@dataclass
class PriorTrainConfig:
    train_tokens: str = "tokens/train"
    val_tokens: str = "tokens/val"
    run_dir: str = "runs/prior"
    codec_model_id: str = ""  # recorded in the prior; default: the id in the token index
    # Start a new run from the float network in this run's state file (same sizes), e.g. the
    # prior of a codec whose codebooks have since moved: the code indices keep most of their meaning.
    init_from: str = ""
    dim: int = 256
    hidden: int = 512
    dilations: str = "1,2,4,8,16,32,1,2,4,8,16,32"
    depth_hidden: int = 512
    precision: str = "auto"  # "bf16", "fp32", or "auto": bf16 where it is fast (training.step.fast_bf16)
    steps: int = 20_000
    max_minutes: float = 0.0
    batch_size: int = 16
    seq_frames: int = 250
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    lr_half_life: int = 2_000
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    level_dropout: float = 0.3  # share of batches trained on fewer levels (lower bitrates)
    seed: int = 0
    threads: int = 0
    log_every: int = 25
    val_every: int = 500
    val_frames: int = 30_000  # frames of validation tokens scored each time
    save_every: int = 250


def parse_config(argv: list[str]) -> PriorTrainConfig:
    return parse_overrides(PriorTrainConfig(), argv)


def unigram_counts(stream: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """How often each code occurs on each level of codes [K, N]: [K, V]."""
    return torch.stack([torch.bincount(level, minlength=codebook_size) for level in stream])


def export(model: PriorNet) -> TokenPrior:
    """The integer prior that inference runs, from the float network being trained."""
    return TokenPrior(IntegerPrior.from_float(model), "prior")


def token_stream(directory: str) -> torch.Tensor:
    """All tokenized files of a directory, one after another: codes [K, total frames]."""
    pieces = [codes for codes in load_tokens(directory) if codes.shape[-1] > 0]
    if not pieces:
        raise SystemExit(f"no tokens in {directory}")
    return torch.cat(pieces, dim=-1)


def random_crops(stream: torch.Tensor, batch: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, stream.shape[-1] - frames, (batch,), generator=generator)
    return torch.stack([stream[:, s : s + frames] for s in starts.tolist()])


@torch.no_grad()
def evaluate(model: PriorNet, stream: torch.Tensor, frames: int, seq_frames: int) -> dict:
    """Bits per token over the first `frames` frames, in windows of seq_frames, and per level."""
    model.eval()
    stream = stream[:, :frames]
    windows = [stream[:, s : s + seq_frames] for s in range(0, stream.shape[-1] - seq_frames + 1, seq_frames)]
    per_level = torch.zeros(stream.shape[0])
    for start in range(0, len(windows), 16):
        codes = torch.stack(windows[start : start + 16])
        logits = model(codes).float()
        loss = torch.nn.functional.cross_entropy(logits.permute(0, 3, 1, 2), codes, reduction="none")
        per_level += loss.sum(dim=(0, 2))
    per_level = per_level / max(len(windows) * seq_frames, 1)
    model.train()
    return {
        "bits_per_token": round(bits(float(per_level.mean())), 4),
        "bits_per_level": [round(bits(float(x)), 3) for x in per_level],
    }


def main(argv: list[str] | None = None) -> None:
    config = parse_config(sys.argv[1:] if argv is None else argv)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    train_stream, val_stream = token_stream(config.train_tokens), token_stream(config.val_tokens)
    index = json.loads((Path(config.train_tokens) / "index.json").read_text())
    codec_id = config.codec_model_id or index["model_id"][0]
    prior_config = PriorConfig(
        num_levels=train_stream.shape[0],
        dim=config.dim,
        hidden=config.hidden,
        dilations=tuple(int(d) for d in config.dilations.split(",")),
        depth_hidden=config.depth_hidden,
        codec_model_id=codec_id,
    )
    model = PriorNet(prior_config)
    model.init_unigram(unigram_counts(train_stream, prior_config.codebook_size))
    if config.init_from:
        warm = load_file(str(Path(config.init_from) / "state.safetensors"))
        weights = {k.split("/", 1)[1]: v for k, v in warm.items() if k.startswith("module.prior/")}
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise SystemExit(f"{config.init_from} holds a prior of another shape: {error}") from None
    optimizer = torch.optim.AdamW(
        model.parameters(), config.learning_rate, betas=(0.9, 0.95), weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(config))
    generator = torch.Generator().manual_seed(config.seed)
    modules, optimizers, schedulers, generators = (
        {"prior": model},
        {"prior": optimizer},
        {"prior": scheduler},
        {"data": generator},
    )

    state_path = run_dir / "state.safetensors"
    step, best, elapsed = 0, math.inf, 0.0
    if state_path.exists():
        info = load_training_state(state_path, modules, optimizers, schedulers, generators)
        step, best, elapsed = info["step"], info["best"], info["elapsed"]
        print(f"resumed from {state_path} at step {step}", file=sys.stderr)
    else:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(
            f"prior: {params:.2f}M parameters; {train_stream.shape[-1]} train and {val_stream.shape[-1]} val frames",
            file=sys.stderr,
        )

    started = time.time()

    def save() -> None:
        info = {"step": step, "best": best, "elapsed": elapsed + time.time() - started}
        save_training_state(state_path, modules, optimizers, schedulers, generators, info)
        export(model).save(run_dir / "last.safetensors")

    def validate(best: float) -> float:
        """Score the model on validation tokens; keep it as best.safetensors if it beats `best`."""
        result = evaluate(model, val_stream, config.val_frames, config.seq_frames)
        metrics.write(json.dumps({"step": step, "val": result}) + "\n")
        metrics.flush()
        tqdm.write(f"step {step}: val {json.dumps(result)}")
        if result["bits_per_token"] < best:
            best = result["bits_per_token"]
            export(model).save(run_dir / "best.safetensors")
        return best

    metrics = (run_dir / "metrics.jsonl").open("a")
    bar = tqdm(total=config.steps, initial=step, dynamic_ncols=True)
    model.train()
    while step < config.steps:
        if config.max_minutes and time.time() - started > config.max_minutes * 60:
            break
        codes = random_crops(train_stream, config.batch_size, config.seq_frames, generator)
        if float(torch.rand((), generator=generator)) < config.level_dropout:
            codes = codes[:, : int(torch.randint(1, codes.shape[1], (), generator=generator))]
        with autocast(torch.device("cpu"), config.precision):
            loss = model.loss(codes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        if step % config.log_every == 0:
            record = {
                "step": step,
                "bits_per_token": bits(loss.item()),
                "levels": codes.shape[1],
                "grad_norm": grad_norm.item(),
                "lr": scheduler.get_last_lr()[0],
            }
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            bar.set_postfix(bits=f"{record['bits_per_token']:.3f}")
        if step % config.val_every == 0:
            best = validate(best)
        if step % config.save_every == 0:
            save()
    if step % config.val_every:  # stopped between validations (--max_minutes): the last steps count too
        best = validate(best)
    save()
    bar.close()


if __name__ == "__main__":
    main()
