"""The Python API: load a codec, turn audio into codes and bytes, and back.

    codec = Codec.load()                      # the bundled model (or Codec.load("my.safetensors"))
    encoded = codec.encode(wav, sample_rate=44100, bitrate=3.0)   # wav [C, T] or [B, C, T]
    audio = codec.decode(encoded)             # [B, 1, T] at codec.sample_rate, original length
    data = codec.to_bytes(encoded)            # the compact file format (codec.bitstream)
    data = codec.to_bytes(encoded, prior=TokenPrior.load())   # smaller: entropy-coded with the prior

Items of different lengths (a server's batches, a stream's chunks) go through `encode_batch` and
`decode_batch`: lists of waveforms [1, T_i] at the model's rate and of codes [K, N_i]. The
`Codec` decides how they pass through the model: items up to `window_frames` long together in
one padded call, longer ones alone, window by window, in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from codec import bitstream, pitchcode

# FileSource, open_audio and write_audio are the audio I/O of this API: the server reads requests
# and writes responses with them.
from codec.audio import AudioSource, FileSource, TensorSource, check_finite, open_audio, write_audio  # noqa: F401
from codec.checkpoint import load_model, save_checkpoint
from codec.config import CodecConfig
from codec.errors import CodecError, CorruptStreamError, InvalidAudioError
from codec.model import CodecModel, build_model
from codec.pitchcode import PitchTrack
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
    # decoder head takes the input's f0; None: the head predicts its own.
    pitch: list[PitchTrack] | None = None

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
        model, checkpoint = load_model(path, "codec", BUNDLED_CHECKPOINT, CodecConfig.from_dict, build_model)
        return cls(model.to(device), f"{model.config.name}:{checkpoint.digest[:12]}")

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

    def num_frames(self, num_samples: int) -> int:
        """Code frames N for num_samples samples T at the model's rate: ceil(T / hop_length)."""
        return self.model.num_frames(num_samples)

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
        sources = [TensorSource(item, sample_rate, self.sample_rate) for item in wav]
        codes = torch.stack(self.encode_batch([s.signal for s in sources], levels))
        tracks = [self.pitch_track(s) for s in sources] if pitch else None
        return EncodedAudio(codes, sources[0].num_samples, self.sample_rate, self.model_id, tracks)

    def encode_file(
        self,
        file: str | Path | BinaryIO | bytes,
        bitrate: float | None = None,
        progress: Progress | None = None,
        pitch: bool = False,
    ) -> EncodedAudio:
        """Encode an audio file in bounded memory -> codes [1, K, N]."""
        source = open_audio(file, self.sample_rate)
        return self.encode_source(source, bitrate, progress, pitch)

    def encode_source(
        self, source: AudioSource, bitrate: float | None = None, progress: Progress | None = None, pitch: bool = False
    ) -> EncodedAudio:
        """Encode an AudioSource window by window -> codes [1, K, N]."""
        levels = self.num_levels(bitrate)
        codes = self.encode_batch([source], levels, progress)[0]
        tracks = [self.pitch_track(source)] if pitch else None
        return EncodedAudio(codes[None], source.num_samples, self.sample_rate, self.model_id, tracks)

    def encode_batch(
        self,
        items: Sequence[torch.Tensor | AudioSource],
        num_levels: int | None = None,
        progress: Progress | None = None,
    ) -> list[torch.Tensor]:
        """Mono waveforms [1, T_i] at the model's rate, of any lengths, or AudioSources -> codes
        [K, N_i] per item, N_i = ceil(T_i / hop_length), K = num_levels (None: all levels).

        Waveforms of up to `window_frames` frames are zero-padded to the longest of them and
        encoded in one model call: the padding is silence the encoder sees past an item's end, so
        the codes of an item's last few frames (within the encoder's receptive field) can differ
        from those of encoding it alone. Longer waveforms, and sources, are encoded alone, window
        by window, in bounded memory; `progress` counts their frames."""
        levels = self.config.quantizer.num_levels if num_levels is None else num_levels
        if not 1 <= levels <= self.config.quantizer.num_levels:
            raise CodecError(f"num_levels must be 1 to {self.config.quantizer.num_levels}, got {levels}")
        codes: list[torch.Tensor | None] = [None] * len(items)
        together = []  # indices of the waveforms encoded in one model call
        for i, item in enumerate(items):
            if isinstance(item, torch.Tensor):
                if item.dim() != 2 or item.shape[0] != 1:
                    raise InvalidAudioError(f"encode_batch takes mono waveforms [1, T], got {tuple(item.shape)}")
                if item.shape[-1] == 0:
                    codes[i] = torch.zeros(levels, 0, dtype=torch.long)
                    continue
                if self.num_frames(item.shape[-1]) <= self.window_frames:
                    together.append(i)
                    continue
                item = TensorSource(item, self.sample_rate, self.sample_rate)
            codes[i] = encode_source(self.model, item, levels, self.window_frames, progress)
        if together:
            longest = max(items[i].shape[-1] for i in together)
            batch = torch.stack([F.pad(items[i], (0, longest - items[i].shape[-1])) for i in together])  # [B, 1, T]
            check_finite(batch)
            out = self.model.encode(batch.to(self.device), levels).cpu()  # [B, K, N]
            for row, i in enumerate(together):
                # clone() outside inference mode: callers may edit the result in place.
                codes[i] = out[row, :, : self.num_frames(items[i].shape[-1])].clone()
        return codes

    def pitch_track(self, item: torch.Tensor | AudioSource) -> PitchTrack:
        """The pitch side stream (`codec.pitchcode`) of a mono waveform [1, T] at the model's rate,
        or of an AudioSource: one f0 value per code frame, measured window by window."""
        if isinstance(item, torch.Tensor):
            item = TensorSource(item, self.sample_rate, self.sample_rate)
        return pitchcode.analyse_source(item, self.config, self.window_frames)

    def decode(self, encoded: EncodedAudio) -> torch.Tensor:
        """Codes [B, K, N] -> waveform [B, 1, num_samples] at the model's sample rate."""
        self._check(encoded)
        items = list(encoded.codes)
        if not items:
            return torch.zeros(0, 1, encoded.num_samples)
        tracks = encoded.pitch or [None] * len(items)
        return torch.stack(self._decode_items(items, [encoded.num_samples] * len(items), tracks))

    def decode_batch(
        self,
        codes: Sequence[torch.Tensor],
        num_samples: Sequence[int],
        pitch: Sequence[PitchTrack | None] | None = None,
    ) -> list[torch.Tensor]:
        """Codes [K_i, N_i] per item, each with its length num_samples_i at the model's rate (and
        its pitch side stream, or None) -> waveforms [1, num_samples_i] at the model's rate.

        Items of up to `window_frames` frames without a pitch stream are zero-padded to the longest
        of those with as many levels and decoded in one model call; the padding's frames can change
        an item's last few samples (within the decoder's receptive field). Longer items, and items
        with a pitch stream, are decoded alone, window by window, in bounded memory."""
        tracks = list(pitch) if pitch is not None else [None] * len(codes)
        if not len(codes) == len(num_samples) == len(tracks):
            raise ValueError(f"{len(codes)} codes, {len(num_samples)} lengths and {len(tracks)} pitch streams")
        for item, length, track in zip(codes, num_samples, tracks):
            if item.dim() != 2:
                raise CorruptStreamError(f"decode_batch takes codes [K, N] per item, got shape {tuple(item.shape)}")
            self.check_codes(item, length)
            if track is not None:
                self._check_pitch(track, item.shape[-1])
        return self._decode_items(list(codes), list(num_samples), tracks)

    def decode_iter(
        self, encoded: EncodedAudio, item: int = 0, progress: Progress | None = None
    ) -> Iterator[torch.Tensor]:
        """Yield the waveform of one batch item in consecutive pieces [1, L] (bounded memory)."""
        self._check(encoded)
        track = None if encoded.pitch is None else encoded.pitch[item]
        return self._decode_windows(encoded.codes[item], encoded.num_samples, track, progress)

    def _decode_items(
        self, codes: list[torch.Tensor], num_samples: list[int], tracks: list[PitchTrack | None]
    ) -> list[torch.Tensor]:
        """decode_batch after its checks."""
        wavs: list[torch.Tensor | None] = [None] * len(codes)
        together: dict[int, list[int]] = {}  # levels -> indices of the items decoded in one model call
        for i, (item, track) in enumerate(zip(codes, tracks)):
            if item.shape[-1] == 0:
                wavs[i] = torch.zeros(1, 0)
            elif track is None and item.shape[-1] <= self.window_frames:
                together.setdefault(item.shape[0], []).append(i)
            else:
                wavs[i] = torch.cat(list(self._decode_windows(item, num_samples[i], track)), dim=-1)
        for members in together.values():
            longest = max(codes[i].shape[-1] for i in members)
            batch = torch.stack([F.pad(codes[i], (0, longest - codes[i].shape[-1])) for i in members])  # [B, K, N]
            out = self.model.decode(batch.to(self.device)).float().cpu()  # [B, 1, N * hop_length]
            for row, i in enumerate(members):
                wavs[i] = out[row, :, : num_samples[i]].clone()
        return wavs

    def _decode_windows(
        self, codes: torch.Tensor, num_samples: int, track: PitchTrack | None, progress: Progress | None = None
    ) -> Iterator[torch.Tensor]:
        pitch = (
            None if track is None else pitchcode.decoder_pitch(track, self.sample_rate, self.config.decoder.upsample)
        )
        return decode_windows(self.model, codes, num_samples, self.window_frames, progress, pitch)

    def check_codes(self, codes: torch.Tensor, num_samples: int, what: str = "codes") -> None:
        """CorruptStreamError unless `codes` [K, N] or [B, K, N] are codes of this model for a length
        of num_samples samples: integers in [0, codebook_size), 1 to num_levels levels (rows),
        N = ceil(num_samples / hop_length). `what` names them in the message."""
        q = self.config.quantizer
        if codes.dim() not in (2, 3):
            raise CorruptStreamError(f"{what} must be [K, N] or [B, K, N], got shape {tuple(codes.shape)}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise CorruptStreamError(f"{what} must be integers, got {codes.dtype}")
        levels, frames = codes.shape[-2:]
        if not 1 <= levels <= q.num_levels:
            raise CorruptStreamError(f"{what} must have 1 to {q.num_levels} rows (levels), got {levels}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= q.codebook_size):
            raise CorruptStreamError(
                f"{what} must be in [0, {q.codebook_size}), got values in [{int(codes.min())}, {int(codes.max())}]"
            )
        if self.num_frames(num_samples) != frames:
            raise CorruptStreamError(
                f"num_samples {num_samples} needs {self.num_frames(num_samples)} frames, {what} have {frames}"
            )

    def _check(self, encoded: EncodedAudio) -> None:
        codes = encoded.codes
        if codes.dim() != 3:
            raise CorruptStreamError(f"codes must be [B, K, N], got shape {tuple(codes.shape)}")
        self.check_codes(codes, encoded.num_samples)
        if encoded.sample_rate != self.sample_rate:
            raise CorruptStreamError(
                f"codes are for {encoded.sample_rate} Hz, this model runs at {self.sample_rate} Hz"
            )
        if encoded.pitch is not None:
            if len(encoded.pitch) != codes.shape[0]:
                raise CorruptStreamError(f"{len(encoded.pitch)} pitch streams for {codes.shape[0]} items of codes")
            for track in encoded.pitch:
                self._check_pitch(track, codes.shape[-1])

    def _check_pitch(self, track: PitchTrack, num_frames: int) -> None:
        if len(track.voiced) != num_frames:
            raise CorruptStreamError(f"a pitch stream of {len(track.voiced)} frames for codes of {num_frames}")

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
        self.check_prior(prior)
        return bitstream.write_stream(
            self.header(encoded, coding="entropy"), payload=prior.entropy_encode(encoded.codes), pitch=pitch
        )

    def from_bytes(self, data: bytes, prior: TokenPrior | None = None) -> EncodedAudio:
        """A file written by to_bytes -> codes [1, K, N], checked against this model; an
        entropy-coded file needs the `prior` it was written with."""
        return self.from_stream(self.read_stream(data), prior)

    @staticmethod
    def read_stream(data: bytes) -> bitstream.Stream:
        """Parse a file written by to_bytes without decoding its codes (CorruptStreamError if it
        is damaged): its header tells how long it is and whether it needs the prior."""
        return bitstream.read_stream(data)

    def from_stream(self, stream: bitstream.Stream, prior: TokenPrior | None = None) -> EncodedAudio:
        """A parsed file (`read_stream`) -> codes [1, K, N], as `from_bytes`."""
        header = stream.header
        self.check_header(header)
        tracks = None
        if stream.pitch is not None:
            tracks = [pitchcode.decode_track(stream.pitch, header.num_frames)]
        if header.codes_coding == "packed":
            codes = torch.from_numpy(bitstream.decode_packed(stream))[None]
        elif prior is None:
            raise CorruptStreamError(f"stream uses {header.coding!r} coding; decode it with the prior")
        else:
            self.check_prior(prior)
            codes = prior.entropy_decode(stream.payload, header.num_levels, header.num_frames)
        return EncodedAudio(codes, header.num_samples, header.sample_rate, header.model_id, tracks)

    def check_prior(self, prior: TokenPrior) -> None:
        """CodecError unless `prior` models this codec's tokens (`TokenPrior.mismatch`)."""
        if reason := prior.mismatch(self):
            raise CodecError(reason)

    def check_header(self, header: bitstream.StreamHeader) -> None:
        """CorruptStreamError unless this model wrote a stream with this header."""
        q = self.config.quantizer
        if header.model_id != self.model_id:
            raise CorruptStreamError(f"stream was written by model {header.model_id}, this is {self.model_id}")
        if (header.sample_rate, header.hop_length) != (self.sample_rate, self.config.hop_length):
            raise CorruptStreamError("stream sample rate or frame size does not match the model")
        if header.codebook_size != q.codebook_size or header.num_levels > q.num_levels:
            raise CorruptStreamError("stream codebook size or number of levels does not match the model")
