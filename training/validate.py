"""Periodic validation during training: PESQ-WB, STOI and mel distance at several bitrates, and
codebook usage, on held-out speech.

`quality` condenses PESQ and STOI into the one number that picks the best checkpoint:
mean PESQ over the bitrates + 10 x mean STOI, so a 0.01 STOI change weighs like 0.1 PESQ (about
the spread between the codecs we compare against on each). `standard_error` gives each PESQ and
STOI mean's standard error over the clips, to tell a real change from noise.
"""

from __future__ import annotations

import numpy as np
import torch

from codec.model import CodecModel
from codec.usage import codebook_usage
from training.losses import mel_distance
from training.metrics import pesq_wb, stoi

BITRATES_KBPS = (1.5, 3.0, 6.0)
STOI_WEIGHT = 10.0


def _pooled(values: list[tuple[float | None, int]]) -> float | None:
    """Duration-weighted mean of the values that exist."""
    kept = [(v, w) for v, w in values if v is not None]
    return round(sum(v * w for v, w in kept) / sum(w for _, w in kept), 4) if kept else None


def _standard_error(values: list[tuple[float | None, int]]) -> float | None:
    """Standard error of the mean over clips (unweighted): how far a change must go to be real."""
    kept = [v for v, _ in values if v is not None]
    return round(float(np.std(kept, ddof=1) / np.sqrt(len(kept))), 4) if len(kept) > 1 else None


@torch.no_grad()
def validate(model: CodecModel, clips: list[torch.Tensor], perceptual: bool = True) -> dict:
    """clips: list of [1, 1, T] at the model's rate. Returns JSON-able metrics; with
    `perceptual`, PESQ-WB, STOI and `quality` too (16 kHz models only)."""
    model.eval()
    device = next(model.parameters()).device
    config = model.config
    perceptual = perceptual and config.sample_rate == 16000
    result: dict = {"mel_distance": {}, "pesq_wb": {}, "stoi": {}, "standard_error": {"pesq_wb": {}, "stoi": {}}}
    all_codes = []
    for kbps in BITRATES_KBPS:
        levels = config.levels_for_bitrate(kbps)
        mel, pesq_values, stoi_values = [], [], []
        for wav in clips:
            wav = wav.to(device)
            codes = model.encode(wav, levels)
            if levels == config.quantizer.num_levels:
                all_codes.append(codes.cpu())
            decoded = model.decode(codes)[..., : wav.shape[-1]].float()
            n = wav.shape[-1]
            mel.append((float(mel_distance(decoded, wav, config.sample_rate)), n))
            if perceptual:
                reference, output = (x.reshape(-1).cpu().double().numpy() for x in (wav, decoded))
                pesq_values.append((pesq_wb(reference, output), n))
                stoi_values.append((stoi(reference, output), n))
        key = f"{kbps}kbps"
        result["mel_distance"][key] = _pooled(mel)
        if perceptual:
            result["pesq_wb"][key], result["stoi"][key] = _pooled(pesq_values), _pooled(stoi_values)
            result["standard_error"]["pesq_wb"][key] = _standard_error(pesq_values)
            result["standard_error"]["stoi"][key] = _standard_error(stoi_values)
    if perceptual and None not in result["pesq_wb"].values() and None not in result["stoi"].values():
        result["quality"] = round(
            float(np.mean(list(result["pesq_wb"].values())))
            + STOI_WEIGHT * float(np.mean(list(result["stoi"].values()))),
            4,
        )
    usage = codebook_usage(torch.cat(all_codes, dim=-1), config.quantizer.codebook_size) if all_codes else []
    result["used_fraction"] = [round(u.used_fraction, 3) for u in usage]
    result["perplexity"] = [round(u.perplexity, 1) for u in usage]
    return result
