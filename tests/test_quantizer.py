"""Residual VQ training mechanics: k-means init, dead-code restarts, and that more levels leave
less error."""

from __future__ import annotations

import torch

from codec.config import QuantizerConfig
from codec.quantizer import ResidualVectorQuantizer, VectorQuantizer

CONFIG = QuantizerConfig(num_levels=1, codebook_size=64, dim=16)


def _level(seed: int = 0) -> VectorQuantizer:
    torch.manual_seed(seed)
    level = VectorQuantizer(CONFIG).train()
    level(torch.randn(8, 16, 50))  # k-means initialisation on diverse vectors
    assert bool(level.initialized)
    return level


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


def _train_rvq(config: QuantizerConfig, batches) -> ResidualVectorQuantizer:
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(config).train()
    with torch.no_grad():
        for x in batches:
            rvq(x, config.num_levels)
    return rvq.eval()


def _offset_batches(count: int, seed: int) -> list[torch.Tensor]:
    """Latents like a real encoder's: a large per-clip offset plus frame-to-frame variation."""
    generator = torch.Generator().manual_seed(seed)
    return [
        3 * torch.randn(8, 16, 1, generator=generator) + torch.randn(8, 16, 50, generator=generator)
        for _ in range(count)
    ]


def test_every_level_removes_part_of_the_residual():
    config = QuantizerConfig(num_levels=4, codebook_size=64, dim=16, level_dropout=0.0)
    rvq = _train_rvq(config, _offset_batches(60, seed=1))
    x = torch.cat(_offset_batches(4, seed=2))
    with torch.no_grad():
        errors = [(x - rvq(x, k).quantized).square().mean().item() for k in range(1, 5)]
        decoded = rvq.decode(rvq(x, 4).codes)
    energy = x.square().mean().item()
    # 64 entries for 16-d Gaussian vectors: each level keeps roughly 64^(-2/16) ~ 0.6 of its input.
    assert all(later < 0.85 * earlier for earlier, later in zip([energy] + errors, errors)), (energy, errors)
    assert errors[-1] < 0.4 * energy, (energy, errors)
    assert torch.allclose(decoded, rvq(x, 4).quantized, atol=1e-5)


def test_initialisation_and_restarts_use_only_the_items_that_use_the_level():
    """In an upper level, items that stopped earlier pass on large unquantized residuals; entries
    placed on them would never be chosen at inference."""
    torch.manual_seed(0)
    config = QuantizerConfig(num_levels=1, codebook_size=64, dim=16)
    active = torch.tensor([True, False] * 4)
    x = torch.randn(8, 16, 50)
    x[~active] *= 100  # the inactive items' residuals
    level = VectorQuantizer(config).train()
    level(x, active)
    assert level.codebook.norm(dim=1).max() < 20  # k-means on the active items' vectors only
    with torch.no_grad():
        level.cluster_size[:16] = 0  # entries 0..15 look dead
    level(x, active)
    assert level.codebook[:16].norm(dim=1).max() < 20
    # No active item on this rank: the level still initialises (from all of its vectors).
    fresh = VectorQuantizer(config).train()
    fresh(x, torch.zeros(8, dtype=torch.bool))
    assert bool(fresh.initialized)


def _usage_on_noise(split_step: float) -> float:
    """Share of 256 entries a level uses after training on 128-d noise with falling variances,
    like the residual an upper level sees."""
    torch.manual_seed(0)
    level = VectorQuantizer(QuantizerConfig(num_levels=1, codebook_size=256, dim=128, split_step=split_step)).train()
    scales = torch.linspace(1.0, 0.1, 128)[:, None]
    for _ in range(300):
        level(torch.randn(8, 128, 50) * scales)
    level.eval()
    with torch.no_grad():
        codes = torch.cat([level(torch.randn(8, 128, 50) * scales)[1].flatten() for _ in range(4)])
    return len(codes.unique()) / 256


def test_restarted_entries_split_a_used_cell_and_stay_in_use():
    # Restarted on a batch vector, an entry is farther from the next batches' vectors than the
    # cells' centres are, and dies again.
    assert _usage_on_noise(split_step=1.0) < 0.4
    assert _usage_on_noise(split_step=0.1) > 0.9
