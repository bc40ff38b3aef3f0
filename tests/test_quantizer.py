"""Residual VQ training mechanics: k-means init, dead-code restarts, collapsed-level restarts."""

from __future__ import annotations

import torch

from codec.config import QuantizerConfig
from codec.quantizer import VectorQuantizer

CONFIG = QuantizerConfig(num_levels=1, codebook_size=64, dim=16, codebook_dim=4, collapse_codes=8)


def _level(seed: int = 0) -> VectorQuantizer:
    torch.manual_seed(seed)
    level = VectorQuantizer(CONFIG).train()
    level(torch.randn(8, 16, 50))  # k-means initialisation on diverse vectors
    assert bool(level.initialized)
    return level


def _distinct(level: VectorQuantizer, x: torch.Tensor) -> int:
    return len(level(x)[1].unique())


def test_healthy_batches_leave_the_projection_alone():
    level = _level()
    bias = level.in_proj.bias.detach().clone()
    assert _distinct(level, torch.randn(8, 16, 50)) > 32
    assert int(level.restarts) == 0 and torch.equal(level.in_proj.bias, bias)


def test_a_collapsed_level_is_centred_and_reinitialised():
    level = _level()
    # A residual dominated by one shared offset: every projected vector points the same way.
    offset = 200 * torch.randn(1, 16, 1)
    collapsed = offset + 0.5 * torch.randn(8, 16, 50)
    with torch.no_grad():
        before = len(level.nearest(level.in_proj(collapsed).transpose(1, 2).reshape(-1, 4)).unique())
    assert before < CONFIG.collapse_codes
    _, codes, _, _ = level(collapsed)
    assert int(level.restarts) == 1
    assert len(codes.unique()) > 32  # the same batch, coded after the restart
    # Switched off, nothing happens.
    off = VectorQuantizer(QuantizerConfig(num_levels=1, codebook_size=64, dim=16, codebook_dim=4, collapse_codes=0)).train()
    off.load_state_dict(_level().state_dict())
    assert len(off(collapsed)[1].unique()) < CONFIG.collapse_codes and int(off.restarts) == 0


def test_unused_entries_are_restarted_from_batch_vectors():
    level = _level()
    with torch.no_grad():
        # Copies of entry 8: ties go to the lowest index, so entries 1..8 can never be chosen.
        level.codebook[:8] = level.codebook[8]
    for _ in range(300):  # their usage counts decay below a tenth of the average
        level(torch.randn(8, 16, 50))
    copies = level.codebook[1:9]
    assert not torch.allclose(copies, copies[:1].expand_as(copies))
    codes = torch.cat([level(torch.randn(8, 16, 50))[1].flatten() for _ in range(4)])
    assert len(set(codes.tolist()) & set(range(1, 9))) >= 4
