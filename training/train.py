"""Train the codec on a corpus manifest; resumes exactly from the run directory's last state.

    python -m training.train --manifest data/corpus/manifest.jsonl --run_dir runs/codec
    torchrun --nproc_per_node 2 -m training.train ...     # data parallel (gloo on CPU, NCCL on GPU)

Any TrainConfig field can be overridden as `--field value`. The run directory holds
`state.safetensors` (everything needed to resume), `best.safetensors` and `last.safetensors`
(inference checkpoints), `metrics.jsonl` and `config.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from codec.api import Codec
from codec.config import CodecConfig
from codec.model import CodecModel, build_model
from training.data import Augment, CropSampler, load_validation, read_manifest
from training.discriminators import Discriminator, DiscriminatorConfig
from training.state import load_training_state, save_training_state
from training.step import Losses, StepOptions, StepResult, Trainer
from training.validate import validate

PARTS = ("encoder", "quantizer", "decoder")  # of a CodecModel


@dataclass
class TrainConfig:
    manifest: str = "data/corpus/manifest.jsonl"
    run_dir: str = "runs/codec"
    # Changes to the default (shipped) model, nested as in codec.config.CodecConfig's JSON,
    # e.g. {"decoder": {"channels": 192}}; {} trains the shipped architecture.
    model: dict = field(default_factory=dict)
    # Share of items trained with a random number of levels, uniform over 1..K, instead of all K
    # (codec.config.QuantizerConfig.level_dropout; negative: the model's, 1.0 by default, which
    # trains every bitrate equally; 0.5 gives all levels 54% of items and 1.5 kbps 4%).
    level_dropout: float = -1.0
    init_from: str = ""  # start a new run from these inference weights (e.g. the bundled model)
    init_discriminator: str = ""  # and its discriminator from this state dict (training.burst writes one)
    steps: int = 200_000  # stop after this many optimizer steps in all
    max_minutes: float = 0.0  # stop this invocation after so many minutes (0: no limit)
    batch_size: int = 16  # per process
    segment_seconds: float = 1.0
    learning_rate: float = 1e-3
    warmup_steps: int = 1000
    lr_half_life: int = 60_000  # steps over which the learning rate halves after warm-up
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 0  # torch threads per process (0: leave the default)
    kind_weights: dict = field(default_factory=lambda: {"speech": 0.65, "tts": 0.1, "music": 0.25})
    # Weights of the named losses; a loss with weight 0 is not computed.
    lambdas: dict = field(
        default_factory=lambda: {
            "mel": 1.0,
            "stft": 1.0,
            "head": 1.0,
            "phase": 1.0,
            "pitch": 1.0,
            "commitment": 1.0,
            "adv": 1.0,
            "feat": 2.0,
            "stoi": 0.0,
            "pesq": 0.0,
            "sisdr": 0.0,
        }
    )
    # Switch the GAN losses on. On 2 CPU cores, at batch 16 x 1 s with `adversarial_items` 8, a
    # step took 1.9 s against 0.8 s without them.
    adversarial: bool = False
    adversarial_start: int = 0  # step at which the discriminator starts
    adversarial_items: int = 0  # items of each batch the discriminators see (0: all)
    adversarial_seconds: float = 0.0  # crop of those items the discriminators see (0: all of it)
    adversarial_every: int = 1  # discriminator update (and adversarial terms) every n-th step
    discriminator_lr: float = 0.0  # 0: the codec's learning rate
    # "bf16": the networks run under bfloat16 autocast (AMX CPUs, tensor cores on a GPU); losses
    # and the head's FFTs stay float32. bench.train_step measures what it saves. "auto": bf16
    # where bf16 matrix work is fast (training.step.fast_bf16), else fp32.
    precision: str = "fp32"
    # Random equalisation, noise and loudness of the training crops (training.data.Augment);
    # the codec reconstructs the augmented crop. 0: loudness only, as before.
    augment: float = 0.0
    # Comma-separated parts kept as they are ("encoder,quantizer": fine-tune the decoder alone;
    # the codes, and so a prior fitted to them, stay valid).
    freeze: str = ""
    log_every: int = 25
    val_every: int = 1000
    val_seconds: float = 120.0
    save_every: int = 500  # steps between resumable states (and last.safetensors)


def parse_overrides(config, argv: list[str]):
    """A copy of the dataclass `config` with `--field value` (or `--field=value`) overrides."""
    fields = {f.name for f in dataclasses.fields(config)}
    overrides = {}
    it = iter(argv)
    for arg in it:
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if key not in fields:
            raise SystemExit(f"unknown argument {arg!r}; options: {', '.join('--' + f for f in sorted(fields))}")
        value = arg.split("=", 1)[1] if "=" in arg else next(it, None)
        if value is None:
            raise SystemExit(f"--{key} needs a value")
        current = getattr(config, key)
        if isinstance(current, bool):
            overrides[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, dict):
            overrides[key] = {**current, **json.loads(value)}
        else:
            overrides[key] = type(current)(value)
    return dataclasses.replace(config, **overrides)


def parse_config(argv: list[str]) -> TrainConfig:
    return parse_overrides(TrainConfig(), argv)


def setup_distributed() -> tuple[int, int, torch.device]:
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def learning_rate_factor(config: TrainConfig):
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(config.warmup_steps, 1))
        decay = 0.5 ** (max(step - config.warmup_steps, 0) / config.lr_half_life)
        return warm * decay

    return factor


def step_options(config: TrainConfig, model_config: CodecConfig) -> StepOptions:
    return StepOptions(
        config.precision,
        config.grad_clip,
        config.adversarial_start,
        config.adversarial_items,
        config.adversarial_seconds,
        config.adversarial_every,
        model_config.sample_rate,
    )


def model_config_for(config: TrainConfig) -> CodecConfig:
    """The model the run trains: the default config with the run's changes."""
    model_config = CodecConfig.with_overrides(config.model)
    if config.level_dropout >= 0:
        model_config = dataclasses.replace(
            model_config, quantizer=dataclasses.replace(model_config.quantizer, level_dropout=config.level_dropout)
        )
    return model_config


def build_trainer(config: TrainConfig, model_config: CodecConfig, device: torch.device, world: int = 1) -> Trainer:
    """A fresh model (frozen parts frozen), its optimizer and schedule, and the discriminator
    with its own when the run is adversarial."""
    model = build_model(model_config).to(device)
    for part in frozen_parts(config.freeze):
        getattr(model, part).requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    train_model = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW(trainable, config.learning_rate, betas=(0.8, 0.99), weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(config))
    trainer = Trainer(
        model,
        train_model,
        Losses(config.lambdas, model, device),
        optimizer,
        scheduler,
        step_options(config, model_config),
        trainable=trainable,
    )
    if config.adversarial:
        discriminator = Discriminator(DiscriminatorConfig()).to(device)
        trainer.discriminator = discriminator
        trainer.train_discriminator = DistributedDataParallel(discriminator) if world > 1 else discriminator
        trainer.d_optimizer = torch.optim.AdamW(
            discriminator.parameters(), config.discriminator_lr or config.learning_rate, betas=(0.8, 0.99)
        )
        trainer.d_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.d_optimizer, learning_rate_factor(config))
    return trainer


class Run:
    """One invocation of a training run: the trainer, its data, and the counters that are saved
    and restored with it. Rank 0 keeps the weights and optimizer state; every rank keeps its own
    random states."""

    def __init__(self, config: TrainConfig, rank: int, world: int, device: torch.device):
        self.config, self.rank, self.world, self.device = config, rank, world, device
        self.dir = Path(config.run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.model_config = model_config_for(config)
        self.trainer = build_trainer(config, self.model_config, device, world)
        self.model, self.frozen = self.trainer.model, frozen_parts(config.freeze)
        rate = self.model_config.sample_rate
        self.sampler = CropSampler(
            read_manifest(config.manifest, "train"),
            rate,
            int(config.segment_seconds * rate),
            config.kind_weights,
            config.seed * 1000 + rank,
            augment=Augment(config.augment, rate),
            progress=rank == 0,
        )
        self.val_clips = (
            load_validation(read_manifest(config.manifest, "val", ("speech",)), rate, config.val_seconds)
            if rank == 0
            else []
        )
        self.state_path = self.dir / ("state.safetensors" if rank == 0 else f"state.rank{rank}.safetensors")
        self.step, self.best, self.elapsed = 0, -math.inf, 0.0  # best: the highest validation score so far
        self.skipped = 0  # steps whose update was skipped, in this invocation
        self.started = time.time()
        self.metrics = (self.dir / "metrics.jsonl").open("a") if rank == 0 else None

    def resume_or_start(self) -> None:
        """Continue from the run directory's state, or start: warm weights, config.json."""
        config, modules = self.config, self.trainer.checkpointables()
        if (self.dir / "state.safetensors").exists():
            info = load_training_state(self.dir / "state.safetensors", *modules, {})
            self.step, self.best, self.elapsed = info["step"], info["best"], info["elapsed"]
            rank_info = load_training_state(self.state_path, {}, {}, {}, {"data": self.sampler.generator})
            if rank_info["step"] != self.step:
                raise SystemExit(
                    f"{self.state_path} is from step {rank_info['step']}, the run state from step {self.step}"
                )
            self._say(f"resumed from {self.state_path} at step {self.step}")
        else:
            if config.init_from:
                warm_start(self.model, config.init_from, announce=self.rank == 0)
            if config.init_discriminator:
                if self.trainer.discriminator is None:
                    raise SystemExit("--init_discriminator needs --adversarial true")
                self.trainer.discriminator.load_state_dict(load_file(config.init_discriminator), strict=True)
            if self.rank == 0:
                record = {"train": dataclasses.asdict(config), "model": self.model_config.to_dict()}
                (self.dir / "config.json").write_text(json.dumps(record, indent=2))
            minutes = {k: round(v / self.model_config.sample_rate / 60, 1) for k, v in self.sampler.seconds.items()}
            self._say(
                f"training {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters on {minutes} minutes"
            )
        self.started = time.time()

    def out_of_time(self) -> bool:
        # Rank 0's clock decides for everyone, so all ranks stop at the same step.
        late = bool(self.config.max_minutes) and time.time() - self.started > self.config.max_minutes * 60
        flag = torch.tensor(float(late), device=self.device)
        if self.world > 1:
            dist.broadcast(flag, src=0)
        return bool(flag)

    def log(self, result: StepResult) -> dict[str, str]:
        """Append the step's losses to metrics.jsonl; returns what the progress bar shows."""
        record = {
            "step": self.step,
            "loss": result.total.item(),
            "grad_norm": result.grad_norm.item(),
            "lr": self.trainer.scheduler.get_last_lr()[0],
        }
        record.update({f"{k}/loss": v.item() for k, v in result.losses.items()})
        record["skipped_steps"] = self.skipped
        record["time"] = round(self.hours_trained() * 3600, 1)
        self._record(record)
        return {"mel": f"{record.get('mel/loss', 0):.3f}", "loss": f"{record['loss']:.3f}"}

    def validate(self) -> str:
        """Score the held-out clips; keep the best checkpoint by held-out PESQ and STOI
        (training.validate), or by the mel distance where those cannot be measured (e.g. a model
        at another sample rate)."""
        result = validate(self.model, self.val_clips)
        set_train_mode(self.model, self.frozen)
        self._record({"step": self.step, "val": result})
        score = result.get("quality", -min(result["mel_distance"].values()))
        if score > self.best:
            self.best = score
            Codec(self.model, self.model_config.name).save(self.dir / "best.safetensors")
        return f"step {self.step}: val {json.dumps(result)}"

    def save(self) -> None:
        """The resumable state (every rank its own) and, on rank 0, last.safetensors."""
        modules = self.trainer.checkpointables() if self.rank == 0 else ({}, {}, {})
        info = {"step": self.step, "best": self.best, "elapsed": self.hours_trained() * 3600}
        save_training_state(self.state_path, *modules, {"data": self.sampler.generator}, info)
        if self.rank == 0:
            Codec(self.model, self.model_config.name).save(self.dir / "last.safetensors")

    def hours_trained(self) -> float:
        return (self.elapsed + time.time() - self.started) / 3600

    def _record(self, record: dict) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()

    def _say(self, message: str) -> None:
        if self.rank == 0:
            print(message, file=sys.stderr)


def train(config: TrainConfig) -> None:
    rank, world, device = setup_distributed()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed + rank)
    run = Run(config, rank, world, device)
    run.resume_or_start()

    bar = tqdm(total=config.steps, initial=run.step, disable=rank != 0, dynamic_ncols=True)
    set_train_mode(run.model, run.frozen)
    while run.step < config.steps and not run.out_of_time():
        result = run.trainer.step(run.sampler.batch(config.batch_size).to(device), run.step)
        run.skipped += not result.applied
        run.step += 1
        bar.update(1)
        if rank == 0 and run.step % config.log_every == 0:
            bar.set_postfix(run.log(result))
        if rank == 0 and run.val_clips and run.step % config.val_every == 0:
            tqdm.write(run.validate())
        if run.step % config.save_every == 0:
            run.save()
    run.save()
    bar.close()
    if world > 1:
        # Every rank reports a digest of its weights and buffers: they must all be equal.
        print(f"rank {rank} step {run.step} weights sha256 {state_digest(run.model)}", file=sys.stderr, flush=True)
        dist.barrier()
        dist.destroy_process_group()


def frozen_parts(spec: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in spec.split(",") if part.strip())
    unknown = [part for part in parts if part not in PARTS]
    if unknown or len(parts) == len(PARTS):
        raise SystemExit(f"--freeze takes some of {', '.join(PARTS)}, got {spec!r}")
    return parts


def set_train_mode(model: CodecModel, frozen: tuple[str, ...]) -> None:
    """Training mode, except in frozen parts. A frozen quantizer's levels neither move their
    codebooks nor restart entries, while the quantizer still drops levels at random, so the
    decoder keeps learning every bitrate."""
    model.train()
    if "encoder" in frozen:
        model.encoder.eval()
    if "quantizer" in frozen:
        for level in model.quantizer.levels:
            level.eval()


def warm_start(model: CodecModel, path: str, announce: bool) -> None:
    """Copy the weights of the checkpoint at `path` into `model`. A part whose config differs
    keeps its fresh initialisation, except a quantizer that differs only in its training
    settings (QuantizerConfig.TRAINING_FIELDS): its codebooks carry over."""
    warm = Codec.load(path).model
    state = {k: v.float() if v.is_floating_point() else v for k, v in warm.state_dict().items()}
    fresh = []
    for part in PARTS:
        old, new = getattr(warm.config, part), getattr(model.config, part)
        if part == "quantizer" and dataclasses.replace(old, **{f: getattr(new, f) for f in old.TRAINING_FIELDS}) == new:
            continue
        if old != new:
            state = {k: v for k, v in state.items() if not k.startswith(part + ".")}
            fresh.append(part)
    model.load_state_dict(state, strict=not fresh)
    if announce and fresh:
        print(f"warm start from {path}: {', '.join(fresh)} re-initialised (config differs)", file=sys.stderr)


def state_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    train(parse_config(sys.argv[1:]))


if __name__ == "__main__":
    main()
