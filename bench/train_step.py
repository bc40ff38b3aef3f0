"""Time the training step as training.train runs it, in several set-ups, and print ms per step.

    python -m bench.train_step --threads 2 --steps 6 \\
        --variant fp32 "--precision fp32" --variant bf16 "--precision bf16" \\
        -- --init_from codec/assets/codec.safetensors --freeze encoder,quantizer --adversarial true

Everything after `--` is a training.train override shared by every variant; each `--variant NAME
ARGS` adds its own overrides; `--compile NAME model,discriminator` runs those modules of the
trainer (model, model.encoder, discriminator, ...) under torch.compile in variant NAME, which
compiles during its warm-up steps. Batches are crops of the manifest's training split when
`--manifest` names one that exists, otherwise seeded noise bursts (the step's cost does not depend
on the content, except the PESQ loss's, a little). The first `--warmup` steps of each variant are
not counted (allocator and oneDNN kernel caches). Run it on an idle machine: a training job on
the same cores makes every figure several times larger.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import torch

from training.data import CropSampler, read_manifest
from training.train import build_trainer, model_config_for, parse_config, warm_start


def noise_bursts(batch: int, samples: int, generator: torch.Generator) -> torch.Tensor:
    """[B, 1, T] of band-limited noise under a syllable-rate envelope."""
    noise = torch.randn(batch, 1, samples, generator=generator)
    noise = torch.nn.functional.avg_pool1d(noise, 3, 1, 1)
    t = torch.arange(samples) / 16000
    envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * 4 * t + torch.rand(batch, 1, 1, generator=generator) * 6.28)
    return 0.1 * noise * envelope


def time_variant(overrides: list[str], steps: int, warmup: int, compiled: list[str]) -> list[float]:
    config = parse_config(overrides)
    torch.manual_seed(config.seed)
    model_config = model_config_for(config)
    trainer = build_trainer(config, model_config, torch.device("cpu"))
    if config.init_from:
        warm_start(trainer.model, config.init_from, announce=False)
    trainer.model.train()
    for path in compiled:
        # Inductor compiles on the first calls (the warm-up steps), for each new input shape.
        module = trainer
        for name in path.split("."):
            module = getattr(module, name)
        module.compile()
    segment = int(config.segment_seconds * model_config.sample_rate)
    generator = torch.Generator().manual_seed(0)
    try:
        sampler = CropSampler(
            read_manifest(config.manifest, "train"),
            model_config.sample_rate,
            segment,
            config.kind_weights,
            0,
            progress=False,
        )
        batches = lambda: sampler.batch(config.batch_size)  # noqa: E731
    except FileNotFoundError:
        batches = lambda: noise_bursts(config.batch_size, segment, generator)  # noqa: E731
    times = []
    for step in range(warmup + steps):
        wav = batches()
        start = time.perf_counter()
        trainer.step(wav, step)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    shared = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--variant",
        nargs=2,
        action="append",
        metavar=("NAME", "ARGS"),
        default=[],
        help="a named set of training.train overrides (one shell-quoted string)",
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--compile",
        action="append",
        nargs=2,
        metavar=("NAME", "MODULES"),
        default=[],
        help="variant NAME runs these trainer modules (comma-separated: model, model.encoder, discriminator) "
        "under torch.compile",
    )
    args = parser.parse_args(own)
    compiled = {name: modules.split(",") for name, modules in args.compile}
    torch.set_num_threads(args.threads)
    variants = args.variant or [("shared", "")]
    print(f"threads {args.threads}, {args.steps} timed steps after {args.warmup}; shared: {' '.join(shared)}")
    print("| variant | ms/step median | min | max |")
    print("|---|---|---|---|")
    for name, extra in variants:
        times = time_variant(shared + shlex.split(extra), args.steps, args.warmup, compiled.get(name, []))
        print(
            f"| {name} | {1000 * statistics.median(times):.0f} | {1000 * min(times):.0f} | {1000 * max(times):.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
