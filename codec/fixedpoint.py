"""The prior as an integer network: the probabilities that entropy coding uses, the same on every machine.

An encoder and a decoder of an entropy-coded file must derive identical frequency tables. Float
networks give that only on the same kind of machine with the same kernels; this one computes
with integers only, so its results depend on nothing but its inputs:

- the frame state is an integer vector in units of 2**-RESIDUAL_BITS;
- each linear layer takes int8 inputs (the state rescaled by an integer multiplier and a
  rounding right shift, as in gemmlowp and TFLite), multiplies them with int8 weights and adds
  an integer bias; the products are summed in float32, which is exact because every partial sum
  of at most MAX_FAN_IN products of two int8 values stays below 2**24;
- logits come out as integers in units of 1/LOGIT_UNITS nat, and become probabilities through a
  table of exp(-z / LOGIT_UNITS) computed once with exact decimal arithmetic.

`IntegerPrior.from_float` converts a trained codec.prior.PriorNet; the checkpoint stores the
integers, so loading involves no float arithmetic at all.
"""

from __future__ import annotations

from decimal import Decimal, getcontext

import numpy as np
import torch
from torch import nn

from codec.prior import QMAX, PriorConfig, PriorNet, weight_steps

RESIDUAL_BITS = 12  # the frame state in units of 2**-12
LOGIT_UNITS = 16  # logits in units of 1/16 nat
WEIGHT_BITS = 30  # the largest probability weight is 2**30
MULTIPLIER_BITS = 30  # integer multipliers below 2**30; products with |values| < 2**32 fit int64
MAX_FAN_IN = (1 << 24) // (QMAX * QMAX)  # 1040: more int8 products could round in float32
MAX_STATE = 1 << 31  # the frame state and accumulators are clamped to +-2**31


def _exp_table() -> torch.Tensor:
    """round(2**30 * exp(-z / 16)) for z = 0 .. until it rounds to 0; decimal arithmetic, so the
    same integers everywhere."""
    getcontext().prec = 40
    values, z = [], 0
    while True:
        value = int((Decimal(-z) / LOGIT_UNITS).exp() * (1 << WEIGHT_BITS) + Decimal("0.5"))
        values.append(value)
        if value == 0:
            return torch.tensor(values, dtype=torch.int64)
        z += 1


EXP_TABLE = _exp_table()  # 345 entries, the last 0
MAX_GAP = len(EXP_TABLE) - 1


def requantize(x: torch.Tensor, multiplier: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """round(x * multiplier / 2**shift), half up, in int64."""
    s = int(shift)
    return (x * multiplier + (1 << (s - 1))) >> s


def to_multiplier(real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integers (m, shift) with m / 2**shift ~ real (positive, scalar or per row); one shift for all."""
    real = real.double().flatten()
    shift = int(np.clip(MULTIPLIER_BITS - np.ceil(np.log2(float(real.max()))), 1, 62))
    return torch.round(real * 2.0**shift).long(), torch.tensor(shift)


def product(q: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    """Exact int8 x int8 matrix product: q [..., in] (integers) @ weight_t [in, out] (integers in
    float32) -> int64 [..., out]."""
    if torch.get_float32_matmul_precision() != "highest":  # TF32 or bf16 passes would round: use float64
        return torch.matmul(q.double(), weight_t.double()).long()
    return torch.matmul(q.float(), weight_t).long()


class IntLinear(nn.Module):
    """Integer form of a codec.prior.QuantLinear: int8 weights [out, in] (kept transposed as float32
    for the product), bias in units of the product, and the multiplier that rescales its input."""

    def __init__(self, fan_in: int, fan_out: int):
        super().__init__()
        if fan_in > MAX_FAN_IN:
            raise ValueError(f"fan-in {fan_in} > {MAX_FAN_IN}: float32 sums of int8 products would not be exact")
        self.register_buffer("weight", torch.zeros(fan_out, fan_in, dtype=torch.int8))
        self.register_buffer("bias", torch.zeros(fan_out, dtype=torch.int64))
        self.register_buffer("in_multiplier", torch.zeros((), dtype=torch.int64))
        self.register_buffer("in_shift", torch.ones((), dtype=torch.int64))
        self.register_buffer("out_multiplier", torch.zeros(fan_out, dtype=torch.int64))
        self.register_buffer("out_shift", torch.ones((), dtype=torch.int64))
        self._weight_t: torch.Tensor | None = None

    def weight_t(self) -> torch.Tensor:
        if self._weight_t is None or self._weight_t.device != self.weight.device:
            self._weight_t = self.weight.float().t().contiguous()
        return self._weight_t

    def quantize_input(self, x: torch.Tensor, low: int = -QMAX) -> torch.Tensor:
        """int8 grid values of x (in the units this layer's multiplier expects)."""
        return requantize(x, self.in_multiplier, self.in_shift).clamp_(low, QMAX)

    def accumulate(self, q: torch.Tensor) -> torch.Tensor:
        return product(q, self.weight_t()) + self.bias

    def rescale(self, acc: torch.Tensor) -> torch.Tensor:
        return requantize(acc.clamp(-MAX_STATE, MAX_STATE), self.out_multiplier, self.out_shift)

    def load_float(self, layer, in_unit: float, out_unit: float, input_step: float | None = None) -> None:
        """Take the integers of a QuantLinear whose input arrives in units of `in_unit` and whose
        output is wanted in units of `out_unit`."""
        with torch.no_grad():
            steps = weight_steps(layer.weight).double()  # [out, 1]
            step = float(layer.input_step()) if input_step is None else input_step
            self.weight.copy_(torch.round(layer.weight.double() / steps).clamp(-QMAX, QMAX).to(torch.int8))
            unit = steps[:, 0] * step  # the value of one unit of the product, per row
            self.bias.copy_(torch.round(layer.bias.double() / unit).clamp(-MAX_STATE, MAX_STATE).long())
            self.in_multiplier, self.in_shift = to_multiplier(torch.tensor(in_unit / step))
            self.in_multiplier = self.in_multiplier[0]
            self.out_multiplier, self.out_shift = to_multiplier(unit / out_unit)
            self._weight_t = None


class IntResidual(nn.Module):
    """x + out(relu(inp(inputs))) on integers; `inputs` are already on inp's int8 grid."""

    def __init__(self, fan_in: int, dim: int, hidden: int):
        super().__init__()
        self.inp = IntLinear(fan_in, hidden)
        self.out = IntLinear(hidden, dim)

    def __call__(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        hidden = self.inp.rescale(self.inp.accumulate(q).clamp_(min=0)).clamp_(0, QMAX)
        return (x + self.out.rescale(self.out.accumulate(hidden))).clamp_(-MAX_STATE, MAX_STATE)

    def load_float(self, block, state_unit: float) -> None:
        out_step = float(block.out.input_step())
        self.inp.load_float(block.inp, state_unit, out_step)
        self.out.load_float(block.out, out_step, state_unit)


class IntegerPrior(nn.Module):
    """The integer network: teacher-forced frame states, per-level logits, and a stepper's pieces."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        k, v, d = config.num_levels, config.codebook_size, config.dim
        self.register_buffer("embed", torch.zeros(k, v, d, dtype=torch.int64))
        self.register_buffer("start", torch.zeros(d, dtype=torch.int64))
        self.register_buffer("count", torch.zeros(k, d, dtype=torch.int64))
        self.register_buffer("level", torch.zeros(k, d, dtype=torch.int64))
        self.temporal = nn.ModuleList(IntResidual(2 * d, d, config.hidden) for _ in config.dilations)
        self.depth = IntResidual(d, d, config.depth_hidden)
        self.heads = nn.ModuleList(IntLinear(d, v) for _ in range(k))

    @classmethod
    def from_float(cls, net: PriorNet) -> IntegerPrior:
        model = cls(net.config)
        unit = 2.0**-RESIDUAL_BITS

        def state(x: torch.Tensor) -> torch.Tensor:
            return torch.round(x.detach().double() / unit).clamp(-MAX_STATE, MAX_STATE).long()

        with torch.no_grad():
            model.embed.copy_(state(net.embed))
            model.start.copy_(state(net.start))
            model.count.copy_(state(net.count))
            model.level.copy_(state(net.level))
            for mine, theirs in zip(model.temporal, net.temporal):
                mine.load_float(theirs, unit)
            model.depth.load_float(net.depth, unit)
            for mine, theirs in zip(model.heads, net.heads):
                mine.load_float(theirs, unit, 1.0 / LOGIT_UNITS)
        return model.eval()

    def first_input(self, num_levels: int, batch: int) -> torch.Tensor:
        return (self.start + self.count[num_levels - 1]).expand(batch, -1).clone()

    def frame_input(self, frame: torch.Tensor) -> torch.Tensor:
        """The next frame's input [B, D] after frame [B, K']."""
        levels = frame.shape[1]
        x = self.count[levels - 1].expand(frame.shape[0], -1).clone()
        for k in range(levels):
            x += self.embed[k][frame[:, k]]
        return x

    def frame_states(self, codes: torch.Tensor) -> torch.Tensor:
        """Teacher-forced frame states [B, N, D] (int64) of codes [B, K', N]."""
        b, levels, n = codes.shape
        x = torch.empty(b, n, self.config.dim, dtype=torch.int64, device=codes.device)
        x[:, 0] = self.first_input(levels, b)
        if n > 1:
            x[:, 1:] = self.count[levels - 1]
            for k in range(levels):
                x[:, 1:] += self.embed[k][codes[:, k, :-1]]
        for layer, dilation in zip(self.temporal, self.config.dilations):
            q = layer.inp.quantize_input(x)
            past = torch.zeros_like(q)
            past[:, dilation:] = q[:, :-dilation]
            x = layer(x, torch.cat([q, past], dim=-1))
        return x

    def level_logits(self, u: torch.Tensor, level: int) -> torch.Tensor:
        """Integer logits [..., V] (units of 1/16 nat) of `level` from u [..., D] = frame state +
        the level's offset + the embeddings of the frame's lower levels."""
        u = self.depth(u, self.depth.inp.quantize_input(u))
        head = self.heads[level]
        return head.rescale(head.accumulate(head.quantize_input(u)))


class Stepper:
    """Runs the integer network one frame at a time for B streams: the same integers as
    `IntegerPrior.frame_states` (each layer keeps its last `dilation` int8 inputs)."""

    def __init__(self, model: IntegerPrior, batch: int, num_levels: int):
        if not 1 <= num_levels <= model.config.num_levels:
            raise ValueError(f"num_levels must be in 1..{model.config.num_levels}")
        self.model = model
        self.batch = batch
        self.num_levels = num_levels
        d = model.config.dim
        self.history = [torch.zeros(batch, dilation, d, dtype=torch.int64) for dilation in model.config.dilations]
        self.time = 0
        self.next_input = model.first_input(num_levels, batch)

    def frame_state(self) -> torch.Tensor:
        """The state [B, D] of the next frame, from the frames pushed so far."""
        x = self.next_input
        for layer, history, dilation in zip(self.model.temporal, self.history, self.model.config.dilations):
            q = layer.inp.quantize_input(x)
            slot = self.time % dilation
            past = history[:, slot].clone()
            history[:, slot] = q
            x = layer(x, torch.cat([q, past], dim=-1))
        self.time += 1
        return x

    def push(self, frame: torch.Tensor) -> None:
        """Record the chosen frame [B, K'] as input to the next one."""
        self.next_input = self.model.frame_input(frame)


def probability_weights(logits: torch.Tensor) -> torch.Tensor:
    """Integer weights [..., V] (int64, the largest 2**30) of integer logits [..., V]."""
    gap = (logits.amax(dim=-1, keepdim=True) - logits).clamp_(max=MAX_GAP)
    return EXP_TABLE[gap]


def interval_starts(logits: torch.Tensor, precision: int) -> torch.Tensor:
    """Where each symbol's interval starts, [..., V + 1] (int64; the last column is 2**precision),
    for integer logits [..., V]: frequencies summing to 2**precision, each at least 1, shared out in
    proportion to the weights by rounding the cumulative weights down (as
    codec.entropy.quantize_probabilities does). Exact integer arithmetic: cumulative weights stay
    below V * 2**30 and their products with 2**precision below 2**63."""
    weights = probability_weights(logits)
    vocabulary = logits.shape[-1]
    cumulative = torch.cumsum(weights, dim=-1)
    bounds = cumulative * ((1 << precision) - vocabulary) // cumulative[..., -1:]
    starts = torch.zeros(*logits.shape[:-1], vocabulary + 1, dtype=torch.int64)
    starts[..., 1:] = bounds + torch.arange(1, vocabulary + 1)
    return starts


def symbol_intervals(logits: torch.Tensor, symbols: torch.Tensor, precision: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, frequency) [...] of symbols [...] under integer logits [..., V]."""
    starts = interval_starts(logits, precision)
    low = starts.gather(-1, symbols[..., None])[..., 0]
    high = starts.gather(-1, symbols[..., None] + 1)[..., 0]
    return low, high - low
