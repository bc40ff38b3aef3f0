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
from codec.config import CodecConfig, tiny_config
from codec.model import CodecModel, build_model
from training.data import Augment, CropSampler, load_validation, read_manifest
from training.discriminators import Discriminator, DiscriminatorConfig
from training.losses import HeadSpectrumLoss, MelLoss, MultiResolutionSTFTLoss, pitch_loss, si_sdr_loss
from training.pesq_loss import PesqLoss
from training.state import load_training_state, save_training_state
from training.step import StepOptions, Trainer
from training.stoi_loss import StoiLoss
from training.validate import validate


PARTS = ("encoder", "quantizer", "decoder")  # of a CodecModel


@dataclass
class TrainConfig:
    manifest: str = "data/corpus/manifest.jsonl"
    run_dir: str = "runs/codec"
    model: str = "default"  # "default" or "tiny"
    decoder_phase: str = ""  # how the decoder head makes phase (codec.config.DecoderConfig.phase; "": the model's)
    encoder_features: str = ""  # what the encoder sees (codec.config.EncoderConfig.features; "": the model's)
    # "true": the harmonic head's fundamental gets a learnt offset (codec.config.DecoderConfig.phase_align).
    phase_align: str = ""  # "", "true" or "false" ("": the model's)
    # Share of items trained with a random number of levels, uniform over 1..K, instead of all K
    # (codec.config.QuantizerConfig.level_dropout; negative: the model's). 1.0 trains every
    # bitrate equally; the default 0.5 gives all levels 54% of items and 1.5 kbps 4%.
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
        default_factory=lambda: {"mel": 1.0, "stft": 1.0, "head": 1.0, "phase": 1.0, "pitch": 1.0,
                                 "commitment": 1.0, "codebook": 1.0, "adv": 1.0, "feat": 2.0, "stoi": 0.0, "pesq": 0.0, "sisdr": 0.0}
    )
    # Switch the GAN losses on. On 2 CPU cores, at batch 16 x 1 s with `adversarial_items` 8, a
    # step took 1.9 s against 0.8 s without them.
    adversarial: bool = False
    adversarial_start: int = 0  # step at which the discriminator starts
    adversarial_items: int = 0  # items of each batch the discriminators see (0: all)
    adversarial_seconds: float = 0.0  # crop of those items the discriminators see (0: all of it)
    adversarial_every: int = 1  # discriminator update (and adversarial terms) every n-th step
    discriminator_lr: float = 0.0  # 0: the codec's learning rate
    # "bf16": the networks run under bfloat16 autocast (AMX on these CPUs, tensor cores on a GPU);
    # losses and the head's FFTs stay float32. training.step_bench measures what it saves.
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
    return StepOptions(config.precision, config.grad_clip, config.adversarial_start, config.adversarial_items,
                       config.adversarial_seconds, config.adversarial_every, model_config.sample_rate)


class Losses:
    """The named losses of one step, weighted by the config's lambdas."""

    def __init__(self, config: TrainConfig, model: CodecModel, device: torch.device):
        self.lambdas = config.lambdas
        self.mel = MelLoss(model.sample_rate).to(device)
        self.stft = MultiResolutionSTFTLoss().to(device)
        head, decoder = model.decoder.head, model.config.decoder
        self.head = HeadSpectrumLoss(head.n_fft, head.hop, absolute_phase=decoder.phase == "direct")
        self.pitch_range = (decoder.pitch_min_hz / model.sample_rate, decoder.pitch_max_hz / model.sample_rate)
        self.stoi = StoiLoss(model.sample_rate)
        self.pesq = PesqLoss(model.sample_rate).to(device) if self.lambdas.get("pesq", 0) else None

    def reconstruction(self, output, wav) -> dict[str, torch.Tensor]:
        losses = {}
        if self.lambdas.get("mel", 0):
            losses["mel"] = self.mel(output.audio, wav)
        if self.lambdas.get("stft", 0):
            losses["stft"] = self.stft(output.audio, wav)
        if self.lambdas.get("head", 0) or self.lambdas.get("phase", 0):
            losses.update(self.head(output.spectrum, wav))
        if self.lambdas.get("pitch", 0) and output.log_f0 is not None:
            losses["pitch"] = pitch_loss(output.log_f0, output.voicing, wav, self.head.n_fft, self.head.hop, *self.pitch_range)
        if self.lambdas.get("stoi", 0):
            losses["stoi"] = self.stoi(output.audio, wav)
        if self.pesq is not None:
            losses["pesq"] = self.pesq(output.audio, wav)
        if self.lambdas.get("sisdr", 0):
            losses["sisdr"] = si_sdr_loss(output.audio, wav)
        losses["commitment"] = output.commitment_loss
        losses["codebook"] = output.codebook_loss
        return losses

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        # Zero-weight terms are left out, not multiplied by 0: a NaN in one would poison the sum.
        return sum(self.lambdas[name] * value for name, value in losses.items() if self.lambdas.get(name, 0.0))


def model_config_for(config: TrainConfig) -> CodecConfig:
    """The model the run trains: the default (or tiny) config with the run's overrides."""
    model_config = tiny_config() if config.model == "tiny" else CodecConfig()
    if config.decoder_phase:
        model_config = dataclasses.replace(model_config, decoder=dataclasses.replace(model_config.decoder, phase=config.decoder_phase))
    if config.phase_align:
        align = config.phase_align.lower() in ("1", "true", "yes")
        model_config = dataclasses.replace(model_config, decoder=dataclasses.replace(model_config.decoder, phase_align=align))
    if config.encoder_features:
        model_config = dataclasses.replace(model_config, encoder=dataclasses.replace(model_config.encoder, features=config.encoder_features))
    if config.level_dropout >= 0:
        model_config = dataclasses.replace(model_config, quantizer=dataclasses.replace(model_config.quantizer, level_dropout=config.level_dropout))
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
    trainer = Trainer(model, train_model, Losses(config, model, device), optimizer, scheduler,
                      step_options(config, model_config), trainable=trainable)
    if config.adversarial:
        discriminator = Discriminator(DiscriminatorConfig()).to(device)
        trainer.discriminator = discriminator
        trainer.train_discriminator = DistributedDataParallel(discriminator) if world > 1 else discriminator
        trainer.d_optimizer = torch.optim.AdamW(discriminator.parameters(), config.discriminator_lr or config.learning_rate, betas=(0.8, 0.99))
        trainer.d_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.d_optimizer, learning_rate_factor(config))
    return trainer


def train(config: TrainConfig) -> None:
    rank, world, device = setup_distributed()
    if config.threads:
        torch.set_num_threads(config.threads)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed + rank)

    model_config = model_config_for(config)
    trainer = build_trainer(config, model_config, device, world)
    model, frozen = trainer.model, frozen_parts(config.freeze)
    modules, optimizers, schedulers = trainer.checkpointables()

    train_clips = read_manifest(config.manifest, "train")
    segment = int(config.segment_seconds * model_config.sample_rate)
    sampler = CropSampler(train_clips, model_config.sample_rate, segment, config.kind_weights, config.seed * 1000 + rank,
                          augment=Augment(config.augment, model_config.sample_rate), progress=rank == 0)
    val_clips = load_validation(read_manifest(config.manifest, "val", ("speech",)), model_config.sample_rate, config.val_seconds) if rank == 0 else []

    # Rank 0 keeps the weights and optimizer state; every rank keeps its own random states.
    state_path = run_dir / ("state.safetensors" if rank == 0 else f"state.rank{rank}.safetensors")
    own = (modules, optimizers, schedulers) if rank == 0 else ({}, {}, {})
    step, best, elapsed = 0, -math.inf, 0.0  # best: the highest validation score so far
    if (run_dir / "state.safetensors").exists():
        info = load_training_state(run_dir / "state.safetensors", modules, optimizers, schedulers, {})
        step, best, elapsed = info["step"], info["best"], info["elapsed"]
        rank_info = load_training_state(state_path, {}, {}, {}, {"data": sampler.generator})
        if rank_info["step"] != step:
            raise SystemExit(f"{state_path} is from step {rank_info['step']}, the run state from step {step}")
        if rank == 0:
            print(f"resumed from {state_path} at step {step}", file=sys.stderr)
    else:
        if config.init_from:
            warm_start(model, config.init_from, announce=rank == 0)
        if config.init_discriminator:
            if trainer.discriminator is None:
                raise SystemExit("--init_discriminator needs --adversarial true")
            trainer.discriminator.load_state_dict(load_file(config.init_discriminator), strict=True)
        if rank == 0:
            (run_dir / "config.json").write_text(json.dumps({"train": dataclasses.asdict(config), "model": model_config.to_dict()}, indent=2))
            print(f"training {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on "
                  f"{ {k: round(v / model_config.sample_rate / 60, 1) for k, v in sampler.seconds.items()} } minutes", file=sys.stderr)

    def save_state() -> None:
        info = {"step": step, "best": best, "elapsed": elapsed + time.time() - started}
        save_training_state(state_path, *own, {"data": sampler.generator}, info)
        if rank == 0:
            Codec(model, model_config.name).save(run_dir / "last.safetensors")

    def out_of_time() -> bool:
        # Rank 0's clock decides for everyone, so all ranks stop at the same step.
        late = bool(config.max_minutes) and time.time() - started > config.max_minutes * 60
        flag = torch.tensor(float(late), device=device)
        if world > 1:
            dist.broadcast(flag, src=0)
        return bool(flag)

    started, skipped = time.time(), 0
    metrics_file = (run_dir / "metrics.jsonl").open("a") if rank == 0 else None
    bar = tqdm(total=config.steps, initial=step, disable=rank != 0, dynamic_ncols=True)
    set_train_mode(model, frozen)
    while step < config.steps:
        if out_of_time():
            break
        wav = sampler.batch(config.batch_size).to(device)
        result = trainer.step(wav, step)
        losses, total, grad_norm = result.losses, result.total, result.grad_norm
        skipped += not result.applied
        step += 1
        bar.update(1)

        if rank == 0 and step % config.log_every == 0:
            record = {"step": step, "loss": total.item(), "grad_norm": grad_norm.item(), "lr": trainer.scheduler.get_last_lr()[0]}
            record.update({f"{k}/loss": v.item() for k, v in losses.items()})
            record["skipped_steps"] = skipped  # in this invocation
            record["level_restarts"] = [int(level.restarts) for level in model.quantizer.levels]  # this process
            record["time"] = round(elapsed + time.time() - started, 1)
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            bar.set_postfix(mel=f"{record.get('mel/loss', 0):.3f}", loss=f"{record['loss']:.3f}")
        if rank == 0 and val_clips and step % config.val_every == 0:
            result = validate(model, val_clips)
            set_train_mode(model, frozen)
            metrics_file.write(json.dumps({"step": step, "val": result}) + "\n")
            metrics_file.flush()
            # Best by held-out PESQ and STOI (training.validate); minus the mel distance where
            # those cannot be measured (e.g. a model at another sample rate).
            score = result.get("quality", -min(result["mel_distance"].values()))
            if score > best:
                best = score
                Codec(model, model_config.name).save(run_dir / "best.safetensors")
            tqdm.write(f"step {step}: val {json.dumps(result)}")
        if step % config.save_every == 0:
            save_state()
    save_state()
    bar.close()
    if world > 1:
        # Every rank reports a digest of its weights and buffers: they must all be equal.
        print(f"rank {rank} step {step} weights sha256 {state_digest(model)}", file=sys.stderr, flush=True)
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
    (e.g. a new quantizer) keeps its fresh initialisation, except that a decoder whose config
    differs only in how its head makes phase moves over whole, less the phase-advance layer
    (restarted at the nominal advances) or pitch head (fresh), a quantizer that differs only in
    its training settings (QuantizerConfig.TRAINING_FIELDS) moves over whole, and an encoder fed "logmag" whose
    new config feeds it "logmag+phase" moves over whole with zero weights on the new inputs (so it
    starts out computing the same latents), as does a harmonic decoder given the phase-align layer
    (added at zero, so the output is unchanged); every other tensor must match."""
    warm = Codec.load(path).model
    state = {k: v.float() if v.is_floating_point() else v for k, v in warm.state_dict().items()}
    kept, grown, added = [], [], []
    for part in PARTS:
        old, new = getattr(warm.config, part), getattr(model.config, part)
        phase_fields = ("phase", "phase_group", "pitch_min_hz", "pitch_max_hz")
        if part == "decoder" and (old.phase_align, new.phase_align) == (False, True) \
                and dataclasses.replace(old, phase_align=True) == new:
            added.append("decoder.head.align.")  # starts at zero: the same output as before
        elif part == "decoder" and old != new and dataclasses.replace(old, **{f: getattr(new, f) for f in phase_fields}) == new:
            grown += ["decoder.head.advance.", "decoder.head.pitch."]
            state = {k: v for k, v in state.items() if not k.startswith(tuple(grown))}
        elif part == "encoder" and old.features == "logmag" and new.features in ("logmag+phase", "logmag+f0") \
                and dataclasses.replace(old, features=new.features) == new:
            weight = state["encoder.input.weight"]
            grown_weight = weight.new_zeros(model.encoder.input.weight.shape)
            grown_weight[:, : weight.shape[1]] = weight
            state["encoder.input.weight"] = grown_weight
        elif part == "quantizer" and dataclasses.replace(old, **{f: getattr(new, f) for f in old.TRAINING_FIELDS}) == new:
            pass  # only how it trains differs: the codebooks carry over
        elif old != new:
            state = {k: v for k, v in state.items() if not k.startswith(part + ".")}
            kept.append(part)
    model.load_state_dict(state, strict=not (kept or grown or added))
    missing = set(model.state_dict()) - set(state)
    if any(not k.startswith(tuple(p + "." for p in kept) + tuple(grown) + tuple(added)) for k in missing):
        raise SystemExit(f"{path} lacks weights for {sorted(missing)[:5]}")
    if grown and model.decoder.head.advance is not None:
        with torch.no_grad():
            for parameter in model.decoder.head.advance.parameters():
                parameter.zero_()
    if announce and kept:
        print(f"warm start from {path}: {', '.join(kept)} re-initialised (config differs)", file=sys.stderr)
    if announce and added:
        print(f"warm start from {path}: {', '.join(added)} added (zero: same output)", file=sys.stderr)
    if announce and grown:
        old, new = warm.config.decoder, model.config.decoder
        print(f"warm start from {path}: decoder phase {old.phase} -> {new.phase}, phase layers restarted", file=sys.stderr)


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
