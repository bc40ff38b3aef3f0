"""The tiny codec the tests train and run: the shipped structure at a few thousand parameters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from codec.config import CodecConfig
from codec.prior import PriorConfig
from training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent

# Overrides of CodecConfig, nested as in its JSON: `TrainConfig(model=TINY_MODEL)` trains it.
TINY_MODEL = {
    "encoder": {"channels": 32, "dilations": [1, 3], "latent_dim": 16},
    "quantizer": {"num_levels": 4, "codebook_size": 64, "dim": 16},
    "decoder": {"channels": 32, "dilations": [1, 2, 4], "skip_channels": 32},
    "name": "vqcodec-tiny",
}


def tiny_config() -> CodecConfig:
    return CodecConfig.with_overrides(TINY_MODEL)


def tiny_prior_config(codec_model_id: str, num_levels: int = 4, codebook_size: int = 64) -> PriorConfig:
    """A prior small enough to train and run in a test, over the tiny codec's tokens."""
    return PriorConfig(
        num_levels=num_levels,
        codebook_size=codebook_size,
        dim=32,
        hidden=48,
        dilations=(1, 2, 4),
        depth_hidden=40,
        codec_model_id=codec_model_id,
    )


def tiny_run(manifest: Path, run_dir: Path, **overrides) -> TrainConfig:
    """Train the tiny model on `manifest` into `run_dir`; `overrides` are TrainConfig fields."""
    config = TrainConfig(
        manifest=str(manifest),
        run_dir=str(run_dir),
        model=TINY_MODEL,
        batch_size=4,
        warmup_steps=20,
        learning_rate=3e-3,
        log_every=5,
        val_every=10_000,
        save_every=10_000,
        threads=2,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    train(config)
    return config


def run_two_processes(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 -m module args`, one thread a process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", module]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
    )
