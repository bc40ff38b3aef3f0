"""Periodic validation during training: mel distance at several bitrates and codebook usage."""

from __future__ import annotations

import torch

from codec.model import CodecModel
from codec.usage import codebook_usage
from training.losses import mel_distance

BITRATES_KBPS = (1.5, 3.0, 6.0)


@torch.no_grad()
def validate(model: CodecModel, clips: list[torch.Tensor]) -> dict:
    """clips: list of [1, 1, T] at the model's rate. Returns JSON-able metrics."""
    model.eval()
    device = next(model.parameters()).device
    config = model.config
    distances: dict[str, float] = {}
    all_codes = []
    for kbps in BITRATES_KBPS:
        levels = config.levels_for_bitrate(kbps)
        total, weight = 0.0, 0
        for wav in clips:
            wav = wav.to(device)
            codes = model.encode(wav, levels)
            if levels == config.quantizer.num_levels:
                all_codes.append(codes.cpu())
            decoded = model.decode(codes)[..., : wav.shape[-1]]
            total += float(mel_distance(decoded, wav, config.sample_rate)) * wav.shape[-1]
            weight += wav.shape[-1]
        distances[f"{kbps}kbps"] = round(total / max(weight, 1), 4)
    usage = codebook_usage(torch.cat(all_codes, dim=-1), config.quantizer.codebook_size) if all_codes else []
    return {
        "mel_distance": distances,
        "used_fraction": [round(u.used_fraction, 3) for u in usage],
        "perplexity": [round(u.perplexity, 1) for u in usage],
    }
