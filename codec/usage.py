"""Codebook usage statistics: how much of each level's codebook the codes actually use."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LevelUsage:
    level: int
    used_fraction: float  # entries used at least once / codebook size
    perplexity: float  # exp(entropy) of the code histogram; codebook_size at best


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> list[LevelUsage]:
    """Usage per level of codes [B, K, N] (or a list of such, concatenated along N)."""
    flat = codes.transpose(0, 1).reshape(codes.shape[1], -1)
    result = []
    for level, row in enumerate(flat):
        counts = torch.bincount(row, minlength=codebook_size).double()
        probs = counts / counts.sum().clamp_min(1)
        entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
        result.append(LevelUsage(level, float((counts > 0).double().mean()), float(entropy.exp())))
    return result
