"""The autoregressive prior over the codec's tokens: p(codes) = prod_t prod_k p(c[t,k] | c[<t], c[t,<k]).

A causal transformer runs over frames (its input at frame t is the sum of the level embeddings of
frame t-1); a small depth network then predicts the K levels of frame t one after another, each
conditioned on the transformer state and on the levels of the same frame already chosen, as in
RQ-Transformer and Moshi's depth transformer, but with a shared MLP instead of attention: the
residual levels depend mostly on their predecessors' sum. Frames past the context window slide
out of the attention; rotary position embeddings keep relative positions right when they do.

The module only computes; the key/value cache and the sampling loop live in codec.sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class PriorConfig:
    num_levels: int = 12
    codebook_size: int = 1024
    dim: int = 256
    layers: int = 6
    heads: int = 4
    depth_hidden: int = 512
    context: int = 500  # frames the transformer attends to (10 s at 50 frames/s)
    frame_rate: float = 50.0
    codec_model_id: str = ""  # the codec whose tokens this prior models


KV = tuple[torch.Tensor, torch.Tensor]  # keys, values [B, H, S, Dh]


def rotary(positions: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, dim] for integer positions [T] (each frequency twice, for rotate-half)."""
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim))
    angles = positions.double()[:, None] * inv[None]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Block(nn.Module):
    def __init__(self, config: PriorConfig):
        super().__init__()
        self.heads = config.heads
        self.norm1 = nn.LayerNorm(config.dim)
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.norm2 = nn.LayerNorm(config.dim)
        self.mlp = nn.Sequential(
            nn.Linear(config.dim, 4 * config.dim), nn.GELU(), nn.Linear(4 * config.dim, config.dim)
        )

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past: KV | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, KV]:
        """x [B, T, D] -> ([B, T, D], this step's keys and values [B, H, T, Dh])."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        new = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=past is None and mask is None)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x)), new


class TokenPriorModel(nn.Module):
    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        k, v, d = config.num_levels, config.codebook_size, config.dim
        self.embed = nn.ModuleList(nn.Embedding(v, d) for _ in range(k))
        self.start = nn.Parameter(torch.zeros(d))
        # Files coded at lower bitrates carry fewer levels: the model is told how many it sees.
        self.count_embed = nn.Embedding(k, d)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        # Depth network: level k sees the frame state plus embeddings of levels < k of this frame.
        self.depth_embed = nn.ModuleList(nn.Embedding(v, d) for _ in range(k - 1))
        self.level_embed = nn.Parameter(torch.zeros(k, d))
        self.depth_norm = nn.LayerNorm(d)
        self.depth_mlp = nn.Sequential(nn.Linear(d, config.depth_hidden), nn.GELU(), nn.Linear(config.depth_hidden, d))
        self.heads = nn.ModuleList(nn.Linear(d, v) for _ in range(k))
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def frame_embedding(self, frame: torch.Tensor | None, num_levels: int) -> torch.Tensor:
        """Transformer input for the frame after `frame` [B, K'] (None: the first frame) -> [B, D]."""
        count = self.count_embed.weight[num_levels - 1]
        if frame is None:
            return (self.start + count)[None]
        return sum(self.embed[k](frame[:, k]) for k in range(frame.shape[1])) + count

    def frame_inputs(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K', N] -> transformer inputs [B, N, D]: position t sees frame t-1 (a start vector at 0)."""
        levels = codes.shape[1]
        summed = sum(emb(codes[:, k]) for k, emb in enumerate(self.embed[:levels]))
        start = self.start.expand(codes.shape[0], 1, -1)
        return torch.cat([start, summed[:, :-1]], dim=1) + self.count_embed.weight[levels - 1]

    def temporal(self, x: torch.Tensor, start: int, past: list[KV] | None = None) -> tuple[torch.Tensor, list[KV]]:
        """Frame states h [B, T, D] for inputs x [B, T, D] at positions start.. (past: cached keys/values)."""
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        cos, sin = rotary(positions, self.config.dim // self.config.heads)
        mask = None
        if past is None and x.shape[1] > self.config.context:
            i = torch.arange(x.shape[1], device=x.device)
            distance = i[:, None] - i[None, :]
            mask = (distance >= 0) & (distance < self.config.context)
        new_kv = []
        for index, block in enumerate(self.blocks):
            x, kv = block(x, cos, sin, None if past is None else past[index], mask)
            new_kv.append(kv)
        return self.norm(x), new_kv

    def level_logits(self, h: torch.Tensor, level: int, previous: torch.Tensor | None) -> torch.Tensor:
        """Logits [..., V] of level `level` given frame states h [..., D] and that frame's lower-level
        embedding sum `previous` [..., D] (None for level 0)."""
        u = h + self.level_embed[level]
        if previous is not None:
            u = u + previous
        u = u + self.depth_mlp(self.depth_norm(u))
        return self.heads[level](u)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, K', N, V] for codes [B, K', N], K' <= K levels (N may exceed
        the context window)."""
        h, _ = self.temporal(self.frame_inputs(codes), 0)
        logits, previous = [], None
        levels = codes.shape[1]
        for level in range(levels):
            logits.append(self.level_logits(h, level, previous))
            if level < levels - 1:
                e = self.depth_embed[level](codes[:, level])
                previous = e if previous is None else previous + e
        return torch.stack(logits, dim=1)

    def loss(self, codes: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats per token of codes [B, K', N]."""
        logits = self.forward(codes)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))


def bits(nats: float) -> float:
    return nats / math.log(2)
