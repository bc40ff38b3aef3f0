"""The autoregressive prior over the codec's tokens: p(codes) = prod_t prod_k p(c[t,k] | c[<t], c[t,<k]).

A stack of causal dilated convolutions runs over frames (its input at frame t is the sum of the
level embeddings of frame t-1, so it sees 2.5 s of past at the default dilations); a small depth
network then predicts the K levels of frame t one after another, each from the frame state plus
the embeddings of the levels of the same frame already chosen, as in RQ-Transformer and Moshi's
depth transformer, with an MLP instead of attention: the residual levels depend mostly on the sum
of their predecessors.

The network is built for exact integer inference (codec.fixedpoint): no attention and no
normalisation, ReLU as the only nonlinearity, and every linear layer trained with its input on an
int8 grid of a learned step (LSQ, Esser et al. 2020) and its weights on per-row int8 grids. So
the integer network that codes files computes what this one was trained to compute. This module
is the float network used for training; inference runs the integer one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

QMAX = 127  # int8 grids are symmetric: [-127, 127]


@dataclass(frozen=True)
class PriorConfig:
    num_levels: int = 12
    codebook_size: int = 1024
    dim: int = 256  # width of the frame state and of the embeddings
    hidden: int = 512  # width inside each temporal layer
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 1, 2, 4, 8, 16, 32)  # one kernel-2 layer each
    depth_hidden: int = 512
    frame_rate: float = 50.0
    codec_model_id: str = ""  # the codec whose tokens this prior models

    @classmethod
    def from_dict(cls, values: dict) -> PriorConfig:
        known = {f.name for f in fields(cls)}
        if unknown := set(values) - known:
            raise ValueError(f"unknown prior config fields {sorted(unknown)}")
        values = dict(values)
        if "dilations" in values:
            values["dilations"] = tuple(int(d) for d in values["dilations"])
        return cls(**values)

    @property
    def receptive_field(self) -> int:
        """Frames of past that reach a frame's state (its own input is the frame before it)."""
        return 1 + sum(self.dilations)


def lsq(x: torch.Tensor, step: torch.Tensor, low: int = -QMAX) -> torch.Tensor:
    """x on the grid step * [low, 127], with straight-through rounding and LSQ's step gradient."""
    scale = 1.0 / math.sqrt(x.numel() * QMAX)
    step = step * scale + (step - step * scale).detach()  # the value of step, its gradient scaled
    v = torch.clamp(x / step, low, QMAX)
    return (v + (v.round() - v).detach()) * step


def weight_steps(weight: torch.Tensor) -> torch.Tensor:
    """Per-row int8 steps [out, 1] of a weight [out, in]."""
    return weight.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / QMAX


class QuantLinear(nn.Module):
    """y = Q(x) Q(W)^T + b: x on an int8 grid of a learned step, W on per-row int8 grids."""

    def __init__(self, fan_in: int, fan_out: int, nonnegative_input: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in) / math.sqrt(fan_in))
        self.bias = nn.Parameter(torch.zeros(fan_out))
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("ready", torch.tensor(False))  # step set from the first batch
        self.low = 0 if nonnegative_input else -QMAX

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.ready):
            with torch.no_grad():  # LSQ's initial step
                self.step.copy_(2 * x.detach().float().abs().mean().clamp_min(1e-4) / math.sqrt(QMAX))
                self.ready.fill_(True)
        steps = weight_steps(self.weight)
        weight = self.weight + ((self.weight / steps).round() * steps - self.weight).detach()
        return F.linear(lsq(x, self.input_step(), self.low), weight, self.bias)

    def input_step(self) -> torch.Tensor:
        """The input grid's step: the learned one, kept positive (a large update can cross 0)."""
        return self.step.abs().clamp_min(1e-6)


class Residual(nn.Module):
    """x + out(relu(inp(x))): the one block of the network, in time (dilated) or in depth."""

    def __init__(self, fan_in: int, dim: int, hidden: int):
        super().__init__()
        self.inp = QuantLinear(fan_in, hidden)
        self.out = QuantLinear(hidden, dim, nonnegative_input=True)
        nn.init.normal_(self.out.weight, std=0.1 / math.sqrt(hidden))

    def forward(self, x: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return x + self.out(F.relu(self.inp(inputs)))


def delayed(x: torch.Tensor, frames: int) -> torch.Tensor:
    """x [B, N, D] delayed by `frames` along N, zeros before the start."""
    return F.pad(x, (0, 0, frames, 0))[:, : x.shape[1]]


class PriorNet(nn.Module):
    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        k, v, d = config.num_levels, config.codebook_size, config.dim
        # One embedding per (level, code); the same table feeds the next frame's state and the
        # depth network of this frame.
        self.embed = nn.Parameter(torch.randn(k, v, d) * 0.1)
        self.start = nn.Parameter(torch.zeros(d))
        self.count = nn.Parameter(torch.zeros(k, d))  # files at lower bitrates carry fewer levels
        self.temporal = nn.ModuleList(Residual(2 * d, d, config.hidden) for _ in config.dilations)
        self.level = nn.Parameter(torch.zeros(k, d))
        self.depth = Residual(d, d, config.depth_hidden)
        self.heads = nn.ModuleList(QuantLinear(d, v) for _ in range(k))

    def frame_states(self, codes: torch.Tensor) -> torch.Tensor:
        """Frame states h [B, N, D] of codes [B, K', N]: h[:, t] depends on frames < t only."""
        levels = codes.shape[1]
        summed = self.embedded(codes).sum(dim=1)  # [B, N, D]
        start = self.start.expand(codes.shape[0], 1, -1)
        x = torch.cat([start, summed[:, :-1]], dim=1) + self.count[levels - 1]
        for layer, dilation in zip(self.temporal, self.config.dilations):
            x = layer(x, torch.cat([x, delayed(x, dilation)], dim=-1))
        return x

    def embedded(self, codes: torch.Tensor) -> torch.Tensor:
        """Level embeddings [B, K', N, D] of codes [B, K', N]."""
        return torch.stack([self.embed[k][codes[:, k]] for k in range(codes.shape[1])], dim=1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, K', N, V] (natural log units) of codes [B, K', N]."""
        h = self.frame_states(codes)
        embedded = self.embedded(codes)
        before = torch.cumsum(embedded, dim=1) - embedded  # the levels below k of frame t
        logits = []
        for level in range(codes.shape[1]):
            u = h + self.level[level] + before[:, level]
            logits.append(self.heads[level](self.depth(u, u)))
        return torch.stack(logits, dim=1)

    def loss(self, codes: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats per token of codes [B, K', N]."""
        logits = self.forward(codes).float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))

    def init_unigram(self, counts: torch.Tensor) -> None:
        """Head biases at the log of each level's code frequencies [K, V]: training starts at the
        unigram entropy instead of log V."""
        with torch.no_grad():
            for head, level_counts in zip(self.heads, counts):
                head.bias.copy_(torch.log((level_counts.float() + 0.5) / (level_counts.sum() + 0.5)))


def bits(nats: float) -> float:
    return nats / math.log(2)
