"""The Python API: load a codec, turn audio into codes and bytes, and back.

    codec = Codec.load()                      # the bundled model (or Codec.load("my.safetensors"))
    encoded = codec.encode(wav, sample_rate=44100, bitrate=3.0)   # wav [C, T] or [B, C, T]
    audio = codec.decode(encoded)             # [B, 1, T] at codec.sample_rate, original length
    data = codec.to_bytes(encoded)            # the compact file format (codec.bitstream)
    data = codec.to_bytes(encoded, prior=TokenPrior.load())   # smaller: entropy-coded with the prior
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch

from codec import bitstream, pitchcode
from codec.audio import AudioSource, TensorSource, open_audio
from codec.checkpoint import CheckpointError, load_state, read_checkpoint, save_checkpoint
from codec.config import CodecConfig
from codec.errors import CodecError, CorruptStreamError, InvalidAudioError
from codec.model import CodecModel, build_model
from codec.windowing import Progress, decode_windows, encode_source

if TYPE_CHECKING:
    from codec.prior_api import TokenPrior

BUNDLED_CHECKPOINT = Path(__file__).parent / "assets" / "codec.safetensors"


@dataclass
class EncodedAudio:
    codes: torch.Tensor  # [B, K, N] int64
    num_samples: int  # length of the original audio at sample_rate
    sample_rate: int  # the model's rate
    model_id: str
    # A pitch side stream per batch item (codec.pitchcode), sent beside the codes so that a
    # harmonic decoder head takes the input's f0; None: the head predicts its own.
    pitch: list[pitchcode.PitchTrack] | None = None

    @property
    def num_levels(self) -> int:
        return self.codes.shape[1]


class Codec:
    def __init__(self, model: CodecModel, model_id: str):
        self.model = model.eval()
        self.config: CodecConfig = model.config
        self.model_id = model_id
        # Frames per window for long inputs: ~10 s keeps memory flat and the overhead of the
        # context on either side small.
        self.window_frames = 500

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> Codec:
        """Load a checkpoint; None means the model bundled with the package."""
        if path is None:
            path = BUNDLED_CHECKPOINT
            if not path.exists():
                raise CheckpointError(f"no bundled model at {path}; pass a checkpoint path")
        checkpoint = read_checkpoint(path, kind="codec")
        try:
            config = CodecConfig.from_dict(checkpoint.config)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: invalid codec config: {error}") from None
        model = build_model(config)
        load_state(model, checkpoint.tensors, str(path))
        return cls(model.to(device), f"{config.name}:{checkpoint.digest[:12]}")

    def save(self, path: str | Path, half: bool = False) -> None:
        save_checkpoint(path, "codec", self.config.to_dict(), self.model.state_dict(), half=half)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def bitrates(self) -> list[float]:
        """kbps offered, index k for k + 1 levels."""
        return [self.config.bitrate(k) / 1000 for k in range(1, self.config.quantizer.num_levels + 1)]

    def num_levels(self, bitrate: float | None) -> int:
        try:
            return self.config.levels_for_bitrate(bitrate)
        except ValueError as error:
            raise InvalidAudioError(str(error)) from None

    def encode(
        self, wav: torch.Tensor | np.ndarray, sample_rate: int, bitrate: float | None = None, pitch: bool = False
    ) -> EncodedAudio:
        """Encode wav [T], [C, T] or [B, C, T] at any sample rate -> codes [B, K, N] (and with
        `pitch`, a pitch side stream per item)."""
        wav = torch.as_tensor(wav)
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() == 2:
            wav = wav[None]
        if wav.dim() != 3:
            raise InvalidAudioError(f"audio must be [T], [C, T] or [B, C, T], got {tuple(wav.shape)}")
        if not 0 < sample_rate <= 768_000:
            raise InvalidAudioError(f"unsupported sample rate {sample_rate} Hz")
        levels = self.num_levels(bitrate)
        self.check_pitch_capable(pitch)
        sources = [TensorSource(item, sample_rate, self.sample_rate) for item in wav]
        num_samples = sources[0].num_samples
        frames = self.model.num_frames(num_samples)
        if frames <= self.window_frames:
            batch = torch.stack([s.signal for s in sources]).to(self.device)
            # clone() outside inference mode: callers may edit the result in place.
            codes = self.model.encode(batch, levels).cpu().clone()
        else:
            codes = torch.stack([encode_source(self.model, s, levels, self.window_frames) for s in sources])
        tracks = [pitchcode.analyse_source(s, self.config, self.window_frames) for s in sources] if pitch else None
        return EncodedAudio(codes, num_samples, self.sample_rate, self.model_id, tracks)

    def encode_file(
        self, file: str | Path | BinaryIO | bytes, bitrate: float | None = None, progress: Progress | None = None,
        pitch: bool = False,
    ) -> EncodedAudio:
        """Encode an audio file in bounded memory -> codes [1, K, N]."""
        source = open_audio(file, self.sample_rate)
        return self.encode_source(source, bitrate, progress, pitch)

    def encode_source(
        self, source: AudioSource, bitrate: float | None = None, progress: Progress | None = None, pitch: bool = False
    ) -> EncodedAudio:
        levels = self.num_levels(bitrate)
        self.check_pitch_capable(pitch)
        codes = encode_source(self.model, source, levels, self.window_frames, progress)
        tracks = [pitchcode.analyse_source(source, self.config, self.window_frames)] if pitch else None
        return EncodedAudio(codes[None], source.num_samples, self.sample_rate, self.model_id, tracks)

    def check_pitch_capable(self, pitch: bool) -> None:
        """CodecError if `pitch` is asked of a model whose decoder cannot take a pitch stream."""
        if pitch and self.model.decoder.head.pitch is None:
            raise CodecError(f"model {self.model_id} has no harmonic decoder head to take a pitch stream")

    def _decoder_pitch(self, encoded: EncodedAudio, item: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if encoded.pitch is None:
            return None
        return pitchcode.decoder_pitch(encoded.pitch[item], self.sample_rate, self.config.decoder.upsample)

    def decode(self, encoded: EncodedAudio) -> torch.Tensor:
        """Codes [B, K, N] -> waveform [B, 1, num_samples] at the model's sample rate."""
        self._check(encoded)
        if encoded.codes.shape[-1] == 0:
            return torch.zeros(encoded.codes.shape[0], 1, 0)
        # A sent pitch goes through the windowed path, which takes it; the one-shot path does not.
        if encoded.pitch is None and encoded.codes.shape[-1] <= self.window_frames:
            wav = self.model.decode(encoded.codes.to(self.device)).float().cpu()
            return wav[..., : encoded.num_samples].clone()
        return torch.stack([torch.cat(list(self.decode_iter(encoded, item)), dim=-1) for item in range(encoded.codes.shape[0])])

    def decode_iter(self, encoded: EncodedAudio, item: int = 0, progress: Progress | None = None):
        """Yield the waveform of one batch item in consecutive pieces [1, L] (bounded memory)."""
        self._check(encoded)
        return decode_windows(self.model, encoded.codes[item], encoded.num_samples, self.window_frames, progress,
                              self._decoder_pitch(encoded, item))

    def _check(self, encoded: EncodedAudio) -> None:
        codes = encoded.codes
        q = self.config.quantizer
        if codes.dim() != 3:
            raise CorruptStreamError(f"codes must be [B, K, N], got shape {tuple(codes.shape)}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise CorruptStreamError(f"codes must be integers, got {codes.dtype}")
        if not 1 <= codes.shape[1] <= q.num_levels:
            raise CorruptStreamError(f"codes have {codes.shape[1]} levels, this model has 1 to {q.num_levels}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= q.codebook_size):
            raise CorruptStreamError(f"codes must be in [0, {q.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]")
        if self.model.num_frames(encoded.num_samples) != codes.shape[-1]:
            raise CorruptStreamError(
                f"{codes.shape[-1]} frames do not match a length of {encoded.num_samples} samples"
            )
        if encoded.sample_rate != self.sample_rate:
            raise CorruptStreamError(f"codes are for {encoded.sample_rate} Hz, this model runs at {self.sample_rate} Hz")
        if encoded.pitch is not None:
            self.check_pitch_capable(True)
            if len(encoded.pitch) != codes.shape[0] or any(len(t.voiced) != codes.shape[-1] for t in encoded.pitch):
                raise CorruptStreamError("the pitch streams do not match the codes' items and frames")

    def header(self, encoded: EncodedAudio, coding: str = "packed") -> bitstream.StreamHeader:
        if encoded.pitch is not None:
            coding += "+pitch"
        return bitstream.StreamHeader(
            model_id=encoded.model_id,
            sample_rate=encoded.sample_rate,
            hop_length=self.config.hop_length,
            num_levels=encoded.num_levels,
            codebook_size=self.config.quantizer.codebook_size,
            num_samples=encoded.num_samples,
            num_frames=encoded.codes.shape[-1],
            coding=coding,
        )

    def to_bytes(self, encoded: EncodedAudio, prior: TokenPrior | None = None) -> bytes:
        """One item's codes [1, K, N] -> the file format: bit-packed, or entropy-coded with
        `prior` (which must model this codec's tokens)."""
        if encoded.codes.shape[0] != 1:
            raise ValueError("to_bytes writes one item; split the batch first")
        self._check(encoded)
        pitch = None if encoded.pitch is None else pitchcode.encode_track(encoded.pitch[0])
        if prior is None:
            return bitstream.write_stream(self.header(encoded), codes=encoded.codes[0].numpy(), pitch=pitch)
        self._check_prior(prior)
        return bitstream.write_stream(self.header(encoded, coding="entropy"), payload=prior.entropy_encode(encoded.codes),
                                      pitch=pitch)

    def from_bytes(self, data: bytes, prior: TokenPrior | None = None) -> EncodedAudio:
        """Parse a file written by to_bytes and check that this model can decode it; an
        entropy-coded file needs the `prior` it was written with."""
        stream = bitstream.read_stream(data)
        header = stream.header
        self.check_header(header)
        tracks = None
        if stream.pitch is not None:
            self.check_pitch_capable(True)
            tracks = [pitchcode.decode_track(stream.pitch, header.num_frames)]
        if header.codes_coding == "packed":
            codes = torch.from_numpy(bitstream.decode_packed(stream))[None]
        elif prior is None:
            raise CorruptStreamError(f"stream uses {header.coding!r} coding; decode it with the prior")
        else:
            self._check_prior(prior)
            codes = prior.entropy_decode(stream.payload, header.num_levels, header.num_frames)
        return EncodedAudio(codes, header.num_samples, header.sample_rate, header.model_id, tracks)

    def _check_prior(self, prior: TokenPrior) -> None:
        if reason := prior.mismatch(self):
            raise CodecError(reason)

    def check_header(self, header: bitstream.StreamHeader) -> None:
        q = self.config.quantizer
        if header.model_id != self.model_id:
            raise CorruptStreamError(f"stream was written by model {header.model_id}, this is {self.model_id}")
        if (header.sample_rate, header.hop_length) != (self.sample_rate, self.config.hop_length):
            raise CorruptStreamError("stream sample rate or frame size does not match the model")
        if header.codebook_size != q.codebook_size or header.num_levels > q.num_levels:
            raise CorruptStreamError("stream codebook size or number of levels does not match the model")
