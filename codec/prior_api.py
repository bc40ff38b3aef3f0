"""The prior's public face: load it, sample token streams, score and entropy-code recordings.

prior = TokenPrior.load()                    # bundled prior (or a path)
codes = prior.sample(seconds=5, temperature=0.9, top_k=50, seed=1)   # [1, K, N]
payload = prior.entropy_encode(codes)        # exact: decodes to the same codes on any machine

Entropy coding cuts a stream into segments of SEGMENT_FRAMES frames, each coded on its own from
the start of the prior's context: the encoder scores all segments at once (teacher forced), and
the decoder advances all segments together, one frame per step. Payload layout:

    prior identity (6 bytes) | CRC32 of the codes (4) | frames per segment (uint16 LE)
    | byte length of each segment (LEB128) | the segments' rANS payloads, one after another

(frames per segment: SEGMENT_FRAMES, or the number of frames if fewer; at least 1.)

The probabilities come from codec.fixedpoint's integer network, so a file written on one machine
decodes on any other (CPU or GPU, any thread count).
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from codec.checkpoint import load_model, save_checkpoint
from codec.entropy import DEFAULT_PRECISION, ParallelDecoder, encode_intervals, max_symbols
from codec.errors import CorruptStreamError
from codec.fixedpoint import IntegerPrior, Stepper, interval_starts, symbol_intervals
from codec.interrupt import checkpoint
from codec.prior import PriorConfig, PriorNet
from codec.sampling import SamplingOptions, generate

BUNDLED_PRIOR = Path(__file__).parent / "assets" / "prior.safetensors"
MAX_SAMPLE_SECONDS = 300.0
MAX_SAMPLE_STREAMS = 64
SEGMENT_FRAMES = 250  # 5 s: what the prior was trained on; a file of N frames has ceil(N / 250)
PRECISION = DEFAULT_PRECISION
ROWS_PER_BLOCK = 8192  # frames scored at once when encoding: bounds the memory of long files
DECODE_GROUP = 256  # segments decoded side by side: bounds the memory of long files


class TokenPrior:
    def __init__(self, model: IntegerPrior, model_id: str):
        self.model = model.eval()
        self.config = model.config
        self.model_id = model_id

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> TokenPrior:
        """The prior always runs on the CPU: its integer work is small and must be exact."""
        model, checkpoint = load_model(path, "prior", BUNDLED_PRIOR, PriorConfig.from_dict, IntegerPrior)
        return cls(model, f"prior:{checkpoint.digest[:12]}")

    @classmethod
    def from_network(cls, net: PriorNet, model_id: str = "prior") -> TokenPrior:
        """The integer prior of a float network (trained, or random for tests)."""
        return cls(IntegerPrior.from_float(net.eval()), model_id)

    def save(self, path: str | Path) -> None:
        config = asdict(self.config)
        config["dilations"] = list(config["dilations"])
        save_checkpoint(path, "prior", config, self.model.state_dict())

    @property
    def num_levels(self) -> int:
        return self.config.num_levels

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def codec_model_id(self) -> str:
        return self.config.codec_model_id

    def mismatch(self, codec) -> str | None:
        """Why this prior cannot model `codec`'s tokens (a codec.api.Codec), or None if it can."""
        q = codec.config.quantizer
        if self.codec_model_id != codec.model_id:
            return (
                f"the prior models the tokens of {self.codec_model_id or 'an unnamed codec'}, not of {codec.model_id}"
            )
        if self.num_levels > q.num_levels or self.codebook_size != q.codebook_size:
            return (
                f"the prior's {self.num_levels} x {self.codebook_size} codes do not fit the codec's "
                f"{q.num_levels} x {q.codebook_size}"
            )
        return None

    def _check_codes(self, codes: torch.Tensor, what: str) -> None:
        if codes.dim() != 3 or codes.shape[0] != 1 or not 1 <= codes.shape[1] <= self.num_levels:
            raise ValueError(
                f"{what} must be codes [1, K, N] with 1 <= K <= {self.num_levels}, got {tuple(codes.shape)}"
            )
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"{what} codes must be in [0, {self.codebook_size})")

    def sample(
        self,
        seconds: float,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
        prompt: torch.Tensor | None = None,
        num_levels: int | None = None,
        streams: int = 1,
    ) -> torch.Tensor:
        """New codes [streams, K, N] for `seconds` of audio, continuing `prompt` [1, K, P] if given
        (the prompt is included at the start of each stream). Stream i uses seed + i, so a seed
        gives the same codes whatever `streams` is."""
        if not 0 < seconds <= MAX_SAMPLE_SECONDS:
            raise ValueError(f"seconds must be in (0, {MAX_SAMPLE_SECONDS:g}]")
        if temperature < 0 or (top_k is not None and top_k < 1):
            raise ValueError("temperature must be >= 0 and top_k >= 1")
        if not 1 <= streams <= MAX_SAMPLE_STREAMS:
            raise ValueError(f"streams must be in [1, {MAX_SAMPLE_STREAMS}]")
        levels = num_levels or (prompt.shape[1] if prompt is not None else self.num_levels)
        if not 1 <= levels <= self.num_levels:
            raise ValueError(f"num_levels must be in [1, {self.num_levels}]")
        if prompt is not None:
            self._check_codes(prompt, "prompt")
            if prompt.shape[1] < levels:
                raise ValueError(f"the prompt has {prompt.shape[1]} levels, fewer than the {levels} asked for")
            prompt = prompt.cpu().long()
        frames = max(1, round(seconds * self.frame_rate))
        seeds = [seed + i for i in range(streams)]
        with torch.inference_mode():
            return generate(self.model, frames, levels, SamplingOptions(temperature, top_k), seeds, prompt)

    # Scoring and entropy coding share one path: the integer intervals of every symbol.

    def _intervals(self, codes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(start, frequency) [S, L, K'] of codes [1, K', N] cut into S segments of L frames, in
        coding order (frame by frame, levels in order); the last segment is padded with zeros,
        whose intervals are not used."""
        levels, frames = codes.shape[1], codes.shape[2]
        count = math.ceil(frames / SEGMENT_FRAMES)
        padded = torch.zeros(1, levels, count * SEGMENT_FRAMES, dtype=torch.long)
        padded[..., :frames] = codes
        segments = padded[0].reshape(levels, count, SEGMENT_FRAMES).transpose(0, 1)  # [S, K', L]
        starts = np.empty((count, SEGMENT_FRAMES, levels), dtype=np.int64)
        widths = np.empty_like(starts)
        block = max(1, ROWS_PER_BLOCK // SEGMENT_FRAMES)
        with torch.inference_mode():
            for first in range(0, count, block):
                checkpoint()
                chunk = segments[first : first + block]
                u = self.model.frame_states(chunk)  # [S', L, D]
                for level in range(levels):
                    logits = self.model.level_logits(u + self.model.level[level], level)
                    low, width = symbol_intervals(logits, chunk[:, level], PRECISION)
                    starts[first : first + block, :, level] = low.numpy()
                    widths[first : first + block, :, level] = width.numpy()
                    u = u + self.model.embed[level][chunk[:, level]]
        return starts, widths

    @torch.inference_mode()
    def cross_entropy(self, codes: torch.Tensor) -> float:
        """Mean bits per token of codes [1, K, N]: what entropy coding spends on them, before the
        few bytes of header and coder state."""
        self._check_codes(codes, "codes")
        if codes.shape[-1] == 0:
            return 0.0
        _, widths = self._intervals(codes)
        used = widths.reshape(-1, codes.shape[1])[: codes.shape[-1]]
        return float(np.mean(PRECISION - np.log2(used)))

    def bits_per_second(self, codes: torch.Tensor) -> float:
        """Information content of codes [1, K, N] in bits per second of audio."""
        return self.cross_entropy(codes) * codes.shape[1] * self.frame_rate

    def entropy_encode(self, codes: torch.Tensor) -> bytes:
        """Codes [1, K, N] -> entropy-coded payload bytes."""
        self._check_codes(codes, "codes")
        codes = codes.cpu().long()
        levels, frames = codes.shape[1], codes.shape[2]
        segments = []
        if frames:
            starts, widths = self._intervals(codes)
            for index in range(len(starts)):
                used = min(SEGMENT_FRAMES, frames - index * SEGMENT_FRAMES) * levels
                segments.append(encode_intervals(starts[index].reshape(-1)[:used], widths[index].reshape(-1)[:used]))
        crc = zlib.crc32(codes.numpy().astype("<u2").tobytes())
        lengths = b"".join(_leb128(len(s)) for s in segments)
        layout = min(SEGMENT_FRAMES, max(frames, 1))  # one layout per stream, so damage cannot hide in it
        return self._identity() + struct.pack("<IH", crc, layout) + lengths + b"".join(segments)

    def entropy_decode(self, payload: bytes, num_levels: int, num_frames: int) -> torch.Tensor:
        """Payload from entropy_encode -> codes [1, K, N]; CorruptStreamError if it does not check out."""
        if num_levels * num_frames > max_symbols(len(payload), self.codebook_size, PRECISION):  # before allocating
            raise CorruptStreamError(
                f"entropy-coded payload of {len(payload)} bytes cannot hold {num_levels} x {num_frames} codes"
            )
        identity = self._identity()
        head = len(identity) + 6
        if len(payload) < head:
            raise CorruptStreamError("entropy-coded payload is truncated")
        if payload[: len(identity)] != identity:
            raise CorruptStreamError(
                f"stream was entropy-coded with prior {payload[: len(identity)].hex()}, the loaded prior is "
                f"{identity.hex()}"
            )
        if not 1 <= num_levels <= self.num_levels:
            raise CorruptStreamError(f"stream has {num_levels} levels, the prior models 1 to {self.num_levels}")
        crc, length = struct.unpack("<IH", payload[len(identity) : head])
        if not 1 <= length <= max(num_frames, 1):
            raise CorruptStreamError(f"entropy-coded payload declares segments of {length} frames for {num_frames}")
        count = math.ceil(num_frames / length)
        position, sizes = head, []
        for _ in range(count):
            size, position = _read_leb128(payload, position)
            sizes.append(size)
        if position + sum(sizes) != len(payload):
            raise CorruptStreamError("entropy-coded payload's segment lengths do not add up to its size")
        pieces = []
        for size in sizes:
            pieces.append(payload[position : position + size])
            position += size
        codes = self._decode_segments(pieces, num_levels, num_frames, length)
        if zlib.crc32(codes.numpy().astype("<u2").tobytes()) != crc:
            raise CorruptStreamError("entropy-coded payload is corrupt (code checksum mismatch)")
        return codes

    @torch.inference_mode()
    def _decode_segments(self, pieces: list[bytes], levels: int, frames: int, length: int) -> torch.Tensor:
        """Codes [1, K', N] from the segments' payloads, DECODE_GROUP segments side by side."""
        if not pieces:
            return torch.zeros(1, levels, 0, dtype=torch.long)
        out = torch.zeros(len(pieces), levels, length, dtype=torch.long)
        for first in range(0, len(pieces), DECODE_GROUP):
            group = pieces[first : first + DECODE_GROUP]
            lengths = np.minimum(length, frames - (first + np.arange(len(group))) * length)
            decoder = ParallelDecoder(group, PRECISION)
            stepper = Stepper(self.model, len(group), levels)
            chunk = out[first : first + len(group)]
            for t in range(int(lengths.max())):
                checkpoint()
                active = lengths > t
                u = stepper.frame_state()
                for level in range(levels):
                    logits = self.model.level_logits(u + self.model.level[level], level)
                    symbols = torch.from_numpy(decoder.decode(interval_starts(logits, PRECISION).numpy(), active))
                    chunk[:, level, t] = symbols
                    u = u + self.model.embed[level][symbols]
                stepper.push(chunk[:, :, t])
            decoder.finish()
        return out.transpose(0, 1).reshape(1, levels, -1)[..., :frames].contiguous()

    def _identity(self) -> bytes:
        return hashlib.sha256(self.model_id.encode()).digest()[:6]


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_leb128(data: bytes, position: int) -> tuple[int, int]:
    """(value, next position); CorruptStreamError if it runs off the end or past 32 bits."""
    value = shift = 0
    while True:
        if position >= len(data) or shift > 28:
            raise CorruptStreamError("entropy-coded payload's segment table is damaged")
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        shift += 7
        if not byte & 0x80:
            return value, position
