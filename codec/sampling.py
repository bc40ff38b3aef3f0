"""Running the prior frame by frame: the key/value cache, sampling, and per-symbol distributions.

`FrameStepper` advances the transformer one frame at a time with a sliding key/value cache (the
same attention window as teacher-forced training) and exposes each level's distribution in turn;
sampling and entropy coding are both loops over it, so both see exactly the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from codec.prior import KV, TokenPriorModel


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0  # <1 sharper, >1 flatter; 0 (or below 1e-3) means greedy
    top_k: int | None = None  # sample among the k most likely codes only (None: all)


class KVCache:
    """Per-layer keys and values [B, H, S, Dh], holding at most context - 1 past frames."""

    def __init__(self, context: int):
        self.context = context
        self.layers: list[KV] | None = None
        self.length = 0  # frames seen so far (the next frame's position)

    def past(self) -> list[KV] | None:
        return self.layers

    def append(self, new: list[KV]) -> None:
        if self.layers is None:
            self.layers = new
        else:
            self.layers = [(torch.cat([k, nk], 2), torch.cat([v, nv], 2)) for (k, v), (nk, nv) in zip(self.layers, new)]
        keep = self.context - 1  # so that a new frame attends to at most `context` frames, itself included
        if self.layers[0][0].shape[2] > keep:
            self.layers = [
                (k[:, :, -keep:], v[:, :, -keep:]) if keep > 0 else (k[:, :, :0], v[:, :, :0]) for k, v in self.layers
            ]
        self.length += new[0][0].shape[2]


class FrameStepper:
    """Feeds frames one at a time; `begin_frame` gives the state for the next frame's levels."""

    def __init__(self, model: TokenPriorModel, num_levels: int, batch: int = 1):
        if not 1 <= num_levels <= model.config.num_levels:
            raise ValueError(f"num_levels must be in 1..{model.config.num_levels}")
        self.model = model
        self.num_levels = num_levels
        self.batch = batch
        self.cache = KVCache(model.config.context)
        self.previous_frame: torch.Tensor | None = None
        # Running sum of the depth embeddings of this frame's chosen levels, and how many it holds.
        self._depth_sum: torch.Tensor | None = None
        self._depth_count = 0

    @torch.inference_mode()
    def begin_frame(self) -> torch.Tensor:
        """Frame state h [B, D] for the next frame, given all frames pushed so far."""
        x = self.model.frame_embedding(self.previous_frame, self.num_levels)
        x = x.expand(self.batch, -1)[:, None]
        h, new = self.model.temporal(x, self.cache.length, self.cache.past())
        self.cache.append(new)
        self._depth_sum, self._depth_count = None, 0
        return h[:, 0]

    @torch.inference_mode()
    def level_logits(self, h: torch.Tensor, level: int, chosen: list[torch.Tensor]) -> torch.Tensor:
        """Logits [B, V] of `level` given the codes [B] already chosen for levels < level."""
        if len(chosen) != level:
            raise ValueError(f"level {level} needs the codes of {level} lower levels, got {len(chosen)}")
        if self._depth_count > level:  # a level asked again: recompute the sum from scratch
            self._depth_sum, self._depth_count = None, 0
        for k in range(self._depth_count, level):
            e = self.model.depth_embed[k](chosen[k])
            self._depth_sum = e if self._depth_sum is None else self._depth_sum + e
        self._depth_count = level
        return self.model.level_logits(h, level, self._depth_sum).float()

    def end_frame(self, frame: torch.Tensor) -> None:
        """Record the finished frame [B, K'] as input for the next one."""
        self.previous_frame = frame


def sample_logits(logits: torch.Tensor, options: SamplingOptions, generator: torch.Generator) -> torch.Tensor:
    """Codes [B] drawn from logits [B, V]."""
    # Below ~1e-3, logits / temperature overflows to inf and softmax to NaN: that is greedy anyway.
    if options.temperature < 1e-3:
        return logits.argmax(dim=-1)
    logits = logits / options.temperature
    if options.top_k is not None and options.top_k < logits.shape[-1]:
        threshold = logits.topk(options.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.inference_mode()
def generate(
    model: TokenPriorModel,
    num_frames: int,
    num_levels: int,
    options: SamplingOptions = SamplingOptions(),
    seed: int = 0,
    prompt: torch.Tensor | None = None,
) -> torch.Tensor:
    """Codes [1, K', P + num_frames]: the prompt [1, K', P] (if any) followed by sampled frames."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    stepper = FrameStepper(model, num_levels)
    frames = []
    if prompt is not None:
        for t in range(prompt.shape[-1]):
            stepper.begin_frame()
            stepper.end_frame(prompt[:, :num_levels, t])
            frames.append(prompt[:, :num_levels, t])
    for _ in range(num_frames):
        h = stepper.begin_frame()
        chosen: list[torch.Tensor] = []
        for level in range(num_levels):
            logits = stepper.level_logits(h, level, chosen)
            chosen.append(sample_logits(logits.cpu(), options, generator).to(h.device))
        frame = torch.stack(chosen, dim=1)
        stepper.end_frame(frame)
        frames.append(frame)
    if not frames:
        return torch.zeros(1, num_levels, 0, dtype=torch.long)
    return torch.stack(frames, dim=2)
