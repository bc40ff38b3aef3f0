"""Residual vector quantization with straight-through gradients (VQ-VAE, van den Oord et al. 2017).

Each level replaces its input by the nearest entry of a codebook; the next level quantizes what is
left. Entries are compared by Euclidean distance in the full latent space and follow exponential
moving averages of the vectors assigned to them (the paper's appendix; EnCodec), so each level
removes part of the residual; the encoder is pulled towards its codes by the commitment loss,
and gradients pass the quantizer straight through. Codebooks are initialised by k-means on the
first training batch, and entries that fall out of use are restarted from vectors of the current
batch. Training drops the upper levels for a random part of each batch, so that one model serves
every bitrate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from codec.config import QuantizerConfig


@dataclass
class QuantizedResult:
    quantized: torch.Tensor  # [B, D, N], straight-through in training
    codes: torch.Tensor  # [B, K, N] int64, K = number of levels used
    commitment_loss: torch.Tensor  # scalar, already weighted by beta


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(tensor)
    return tensor


def _broadcast(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def _kmeans(samples: torch.Tensor, k: int, iterations: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on samples [M, d]; returns centroids [k, d] and cluster sizes [k]."""
    index = torch.randint(0, samples.shape[0], (k,), device=samples.device)
    centroids = samples[index].clone()
    for _ in range(iterations):
        assign = torch.cdist(samples, centroids).argmin(dim=1)
        sizes = torch.bincount(assign, minlength=k).to(samples.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, samples)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
    return centroids, sizes


class VectorQuantizer(nn.Module):
    """One level: pick the nearest of `codebook_size` entries for each vector of [B, D, N]."""

    def __init__(self, config: QuantizerConfig):
        super().__init__()
        self.config = config
        size = config.codebook_size
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # EMA of how many vectors each entry wins per step: drives dead-code restarts.
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("codebook", torch.randn(size, config.dim))
        self.register_buffer("embed_sum", torch.zeros(size, config.dim))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest entry for each vector of z [M, D] -> [M]."""
        codebook = self.codebook.to(z.dtype)
        # argmin |z - c|^2 = argmax 2 z.c - |c|^2 (|z|^2 is the same for every entry)
        return (2 * z @ codebook.t() - codebook.square().sum(dim=1)).argmax(dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, N] -> this level's contribution [B, D, N]."""
        return F.embedding(codes, self.codebook).transpose(1, 2)

    @torch.no_grad()
    def _initialize(self, z: torch.Tensor) -> None:
        centroids, sizes = _kmeans(z.float(), self.config.codebook_size)
        self.codebook.copy_(_broadcast(centroids))
        self.cluster_size.copy_(_broadcast(sizes))
        self.embed_sum.copy_(self.codebook * self.cluster_size[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update_statistics(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        decay = self.config.ema_decay
        counts = _all_reduce(torch.bincount(codes, minlength=self.config.codebook_size).float())
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        sums = _all_reduce(torch.zeros_like(self.embed_sum).index_add_(0, codes, z.float()))
        self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
        # Laplace smoothing keeps rare entries from dividing by ~0.
        total = self.cluster_size.sum()
        size = self.config.codebook_size
        smoothed = (self.cluster_size + 1e-5) / (total + size * 1e-5) * total
        self.codebook.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def _restart_dead_codes(self, z: torch.Tensor) -> None:
        # Dead means used far less than the average entry. A relative threshold does not depend on
        # the batch size, the number of processes or how many items use this level.
        average = self.cluster_size.mean()
        dead = self.cluster_size < self.config.dead_code_threshold * average
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        vectors = z[torch.randint(0, z.shape[0], (num_dead,), device=z.device)].float()
        # Split the entry a batch vector belongs to (as in the LBG algorithm): the new entry lies
        # a little way from it towards the vector and takes over the half of its cell on that
        # side. An entry placed on the vector itself wins almost nothing in a 128-d space, where
        # a random vector is far closer to its cell's centre than to any other vector.
        owner = self.codebook[self.nearest(vectors)].float()
        vectors = owner + self.config.split_step * (vectors - owner)
        # The same replacement vectors on every rank keep the codebooks identical under DDP.
        replacement = _broadcast(vectors.contiguous())
        # A restarted entry starts with an average count, so it has time to win vectors before
        # it could be declared dead again.
        self.codebook[dead] = replacement
        self.cluster_size[dead] = average
        self.embed_sum[dead] = replacement * average

    @staticmethod
    def _active_vectors(z: torch.Tensor, active: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat, detached vectors of z [B, d, N]: the active items' [B' * N, d] (maybe none), and
        those to sample codebook entries from: the same, or all items' when none is active."""
        vectors = z.transpose(1, 2)
        if active is not None:
            vectors = vectors[active]
        vectors = vectors.reshape(-1, z.shape[1]).detach()
        return vectors, vectors if vectors.shape[0] else z.transpose(1, 2).reshape(-1, z.shape[1]).detach()

    def forward(
        self, z: torch.Tensor, active: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize z [B, D, N]. Returns (output [B, D, N] with straight-through gradients, codes
        [B, N], commitment loss [B]). `active` [B] (bool) marks the items that use this level;
        only they update the codebook."""
        batch, dim, frames = z.shape
        flat = z.transpose(1, 2).reshape(-1, dim)
        # Vectors of the items that use this level: in the upper levels, an item that stopped
        # earlier passes on an unquantized residual, far larger than those this level sees at
        # inference, so the codebook is initialised and restarted from the active items only.
        # (A rank with no active item falls back to all of its vectors; rank 0's choice is
        # broadcast either way.)
        selected, samples = self._active_vectors(z, active)
        # The step that initialises a level restarts nothing: its counts hold one batch only.
        initializing = self.training and not bool(self.initialized)
        if initializing:
            self._initialize(samples)
        codes = self.nearest(flat.detach()).view(batch, frames)
        if self.training:
            selected_codes = codes[active] if active is not None else codes
            self._update_statistics(selected, selected_codes.reshape(-1))
            if not initializing:
                self._restart_dead_codes(samples)
        z_q = self.decode(codes)
        commitment = (z - z_q.detach()).pow(2).mean(dim=(1, 2))
        # Straight-through: the forward pass sees the codebook vector, the backward pass the identity.
        return z + (z_q - z).detach(), codes, commitment


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, config: QuantizerConfig):
        super().__init__()
        self.config = config
        self.levels = nn.ModuleList(VectorQuantizer(config) for _ in range(config.num_levels))

    def _levels_per_item(self, batch: int, num_levels: int | None, device: torch.device) -> torch.Tensor:
        levels = torch.full((batch,), num_levels or self.config.num_levels, device=device)
        if self.training and num_levels is None and self.config.level_dropout > 0:
            dropped = torch.rand(batch, device=device) < self.config.level_dropout
            random_levels = torch.randint(1, self.config.num_levels + 1, (batch,), device=device)
            levels = torch.where(dropped, random_levels, levels)
        return levels

    def forward(self, x: torch.Tensor, num_levels: int | None = None) -> QuantizedResult:
        """Quantize latents x [B, D, N] with `num_levels` levels (None: all; random in training)."""
        if num_levels is not None and not 1 <= num_levels <= self.config.num_levels:
            raise ValueError(f"num_levels must be in 1..{self.config.num_levels}, got {num_levels}")
        levels = self._levels_per_item(x.shape[0], num_levels, x.device)
        # In training every level runs, active or not, so that all data-parallel ranks make the
        # same collective calls in the same order.
        used = self.config.num_levels if self.training else int(levels.max())
        residual = x
        quantized = torch.zeros_like(x)
        codes, commitment = [], x.new_zeros(())
        for index, level in enumerate(self.levels[:used]):
            active = levels > index
            out, c, commit = level(residual, active if self.training else None)
            mask = active.to(x.dtype)
            weight = mask.mean().clamp_min(1e-8)
            commitment = commitment + (commit * mask).mean() / weight
            quantized = quantized + out * mask[:, None, None]
            residual = residual - out * mask[:, None, None]
            codes.append(c)
        return QuantizedResult(
            quantized=quantized,
            codes=torch.stack(codes, dim=1),
            commitment_loss=commitment * self.config.commitment_weight,
        )

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the levels' vectors for codes [B, K, N] -> [B, D, N]; K may be fewer than all levels."""
        if codes.shape[1] > self.config.num_levels:
            raise ValueError(f"codes have {codes.shape[1]} levels, the model has {self.config.num_levels}")
        return sum(level.decode(codes[:, k]) for k, level in enumerate(self.levels[: codes.shape[1]]))
