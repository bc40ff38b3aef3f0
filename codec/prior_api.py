"""The prior's public face: load it, sample token streams, score recordings in bits per second.

prior = TokenPrior.load()                    # bundled prior (or a path)
codes = prior.sample(seconds=5, temperature=0.9, top_k=50, seed=1)   # [1, K, N]
audio = codec.decode(EncodedAudio(codes, ...))
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from codec.checkpoint import load_model, save_checkpoint
from codec.entropy import RangeDecoder, RangeEncoder, max_symbols, quantize_probabilities
from codec.errors import CorruptStreamError
from codec.prior import PriorConfig, TokenPriorModel, bits
from codec.sampling import FrameStepper, SamplingOptions, generate

BUNDLED_PRIOR = Path(__file__).parent / "assets" / "prior.safetensors"
MAX_SAMPLE_SECONDS = 300.0


class TokenPrior:
    def __init__(self, model: TokenPriorModel, model_id: str):
        self.model = model.eval()
        self.config = model.config
        self.model_id = model_id

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> TokenPrior:
        model, checkpoint = load_model(
            path, "prior", BUNDLED_PRIOR, lambda config: PriorConfig(**config), TokenPriorModel
        )
        return cls(model.to(device), f"prior:{checkpoint.digest[:12]}")

    def save(self, path: str | Path, half: bool = False) -> None:
        save_checkpoint(path, "prior", asdict(self.config), self.model.state_dict(), half=half)

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
    ) -> torch.Tensor:
        """New codes [1, K, N] for `seconds` of audio, continuing `prompt` [1, K, P] if given
        (the prompt is included at the start of the result). Same seed, same machine: same codes."""
        if not 0 < seconds <= MAX_SAMPLE_SECONDS:
            raise ValueError(f"seconds must be in (0, {MAX_SAMPLE_SECONDS:g}]")
        if temperature < 0 or (top_k is not None and top_k < 1):
            raise ValueError("temperature must be >= 0 and top_k >= 1")
        levels = num_levels or (prompt.shape[1] if prompt is not None else self.num_levels)
        if prompt is not None:
            self._check_codes(prompt, "prompt")
            prompt = prompt.to(self.device)
        frames = max(1, round(seconds * self.frame_rate))
        codes = generate(self.model, frames, levels, SamplingOptions(temperature, top_k), seed, prompt)
        return codes.cpu().clone()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def cross_entropy(self, codes: torch.Tensor) -> float:
        """Mean bits per token of codes [1, K, N] under the prior (teacher forced)."""
        self._check_codes(codes, "codes")
        if codes.shape[-1] == 0:
            return 0.0
        return bits(float(self.model.loss(codes.to(self.device))))

    def bits_per_second(self, codes: torch.Tensor) -> float:
        """Information content of codes [1, K, N] in bits per second of audio."""
        return self.cross_entropy(codes) * codes.shape[1] * self.frame_rate

    # Entropy coding. Encoder and decoder run the same incremental computation one thread wide,
    # so they derive bitwise-identical probabilities and hence identical integer frequencies.
    # The payload starts with the prior's identity and a CRC32 of the codes, so a stream coded
    # with another prior, or damaged, is reported instead of decoded to garbage.

    def _frequencies(self, logits: torch.Tensor) -> np.ndarray:
        probs = torch.softmax(logits.float(), dim=-1)[0].cpu().numpy()
        return quantize_probabilities(probs)

    def entropy_encode(self, codes: torch.Tensor) -> bytes:
        """Codes [1, K, N] -> entropy-coded payload bytes."""
        self._check_codes(codes, "codes")
        codes = codes.to(self.device)
        levels = codes.shape[1]
        encoder = RangeEncoder()
        with _single_thread():
            stepper = FrameStepper(self.model, levels)
            for t in range(codes.shape[-1]):
                h = stepper.begin_frame()
                chosen: list[torch.Tensor] = []
                for level in range(levels):
                    symbol = codes[:, level, t]
                    encoder.encode(int(symbol), self._frequencies(stepper.level_logits(h, level, chosen)))
                    chosen.append(symbol)
                stepper.end_frame(codes[:, :, t])
        crc = zlib.crc32(codes.cpu().numpy().astype("<u2").tobytes())
        return self._identity() + struct.pack("<I", crc) + encoder.finish()

    def entropy_decode(self, payload: bytes, num_levels: int, num_frames: int) -> torch.Tensor:
        """Payload from entropy_encode -> codes [1, K, N]; CorruptStreamError if it does not check out."""
        if num_levels * num_frames > max_symbols(len(payload), self.codebook_size):  # before allocating
            raise CorruptStreamError(
                f"entropy-coded payload of {len(payload)} bytes cannot hold {num_levels} x {num_frames} codes"
            )
        identity = self._identity()
        head = len(identity) + 4
        if len(payload) < head:
            raise CorruptStreamError("entropy-coded payload is truncated")
        if payload[: len(identity)] != identity:
            raise CorruptStreamError(
                f"stream was entropy-coded with prior {payload[: len(identity)].hex()}, the loaded prior is "
                f"{identity.hex()}"
            )
        if not 1 <= num_levels <= self.num_levels:
            raise CorruptStreamError(f"stream has {num_levels} levels, the prior models 1 to {self.num_levels}")
        (crc,) = struct.unpack("<I", payload[len(identity) : head])
        decoder = RangeDecoder(payload[head:])
        frames = torch.zeros(1, num_levels, num_frames, dtype=torch.long, device=self.device)
        with _single_thread():
            stepper = FrameStepper(self.model, num_levels)
            for t in range(num_frames):
                h = stepper.begin_frame()
                chosen: list[torch.Tensor] = []
                for level in range(num_levels):
                    symbol = decoder.decode(self._frequencies(stepper.level_logits(h, level, chosen)))
                    chosen.append(torch.tensor([symbol], device=self.device))
                frames[0, :, t] = torch.cat(chosen)
                stepper.end_frame(frames[:, :, t])
        decoder.finish()
        codes = frames.cpu()
        if zlib.crc32(codes.numpy().astype("<u2").tobytes()) != crc:
            raise CorruptStreamError("entropy-coded payload is corrupt (code checksum mismatch)")
        return codes

    def _identity(self) -> bytes:
        return hashlib.sha256(self.model_id.encode()).digest()[:6]


@contextmanager
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
