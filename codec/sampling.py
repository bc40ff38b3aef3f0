"""Sampling new token streams from the integer prior, several streams at once.

Each frame runs the temporal stack once for all streams (codec.fixedpoint.Stepper) and then the
depth network level by level; a level's code is drawn from the prior's integer logits (units of
1/16 nat) with a numpy generator, so a seed gives the same codes on every machine where numpy's
exp agrees, and the same codes whatever else the batch holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codec.fixedpoint import LOGIT_UNITS, IntegerPrior, Stepper
from codec.interrupt import checkpoint


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0  # <1 sharper, >1 flatter; 0 (or below 1e-3) means greedy
    top_k: int | None = None  # sample among the k most likely codes only (None: all)


def sample_logits(logits: np.ndarray, options: SamplingOptions, generators: list[np.random.Generator]) -> np.ndarray:
    """Codes [B] drawn from integer logits [B, V], row b with generators[b]."""
    if options.temperature < 1e-3:
        return logits.argmax(axis=-1)
    scaled = logits.astype(np.float64) / (LOGIT_UNITS * options.temperature)
    if options.top_k is not None and options.top_k < logits.shape[-1]:
        threshold = np.partition(scaled, -options.top_k, axis=-1)[:, -options.top_k, None]
        scaled = np.where(scaled < threshold, -np.inf, scaled)
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    cumulative = np.cumsum(probs, axis=-1)
    draws = np.array([g.random() for g in generators]) * cumulative[:, -1]
    chosen = (cumulative <= draws[:, None]).sum(axis=-1)
    return np.minimum(chosen, logits.shape[-1] - 1)


@torch.inference_mode()
def generate(
    model: IntegerPrior,
    num_frames: int,
    num_levels: int,
    options: SamplingOptions = SamplingOptions(),
    seeds: list[int] = (0,),
    prompt: torch.Tensor | None = None,
) -> torch.Tensor:
    """Codes [B, K', P + num_frames], one stream per seed: the prompt [1, K', P] (if any, shared by
    all streams) followed by sampled frames."""
    batch = len(seeds)
    generators = [np.random.Generator(np.random.PCG64(seed)) for seed in seeds]
    stepper = Stepper(model, batch, num_levels)
    frames = []
    if prompt is not None:
        for t in range(prompt.shape[-1]):
            frame = prompt[:, :num_levels, t].expand(batch, -1)
            stepper.frame_state()
            stepper.push(frame)
            frames.append(frame)
    for _ in range(num_frames):
        checkpoint()
        u = stepper.frame_state()
        chosen = torch.empty(batch, num_levels, dtype=torch.int64)
        for level in range(num_levels):
            logits = model.level_logits(u + model.level[level], level)
            chosen[:, level] = torch.from_numpy(sample_logits(logits.numpy(), options, generators))
            u = u + model.embed[level][chosen[:, level]]
        stepper.push(chosen)
        frames.append(chosen)
    if not frames:
        return torch.zeros(batch, num_levels, 0, dtype=torch.long)
    return torch.stack(frames, dim=2)
