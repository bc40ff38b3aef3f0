"""Audio in and out: reading any soundfile-supported file in bounded memory, checking it, and
converting it to the model's sample rate and a single channel.

`AudioSource` is what the windowed encoder reads from: it serves any span of the converted signal
on request, so an hour-long file is never held in memory at once. A file source resamples each
span with extra margin and crops it, which gives the same samples as resampling the whole file.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from codec.errors import InvalidAudioError

# Input samples of margin either side of a span when resampling it in pieces: well beyond the
# support of torchaudio's windowed-sinc kernel (lowpass_filter_width=6 zero crossings).
_RESAMPLE_MARGIN_SECONDS = 0.01
MAX_SAMPLE_RATE = 768_000


class AudioSource(Protocol):
    sample_rate: int  # after conversion: the model's rate
    num_samples: int  # after conversion

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Converted mono samples [1, stop - start]; zeros beyond the end."""
        ...


def check_finite(samples: np.ndarray | torch.Tensor, where: str = "audio") -> None:
    finite = np.isfinite(samples).all() if isinstance(samples, np.ndarray) else torch.isfinite(samples).all()
    if not finite:
        raise InvalidAudioError(f"{where} contains NaN or infinite samples")


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample wav [..., T] from orig_rate to new_rate (band-limited sinc)."""
    if orig_rate == new_rate:
        return wav
    return AF.resample(wav, orig_rate, new_rate)


class TensorSource:
    """An in-memory signal [C, T] at any rate, mixed to mono and resampled on construction."""

    def __init__(self, wav: torch.Tensor, sample_rate: int, target_rate: int):
        if wav.dim() != 2 or wav.shape[0] == 0:
            raise InvalidAudioError(f"audio must have shape [channels, samples], got {tuple(wav.shape)}")
        if wav.shape[1] == 0:
            raise InvalidAudioError("audio is empty (0 samples)")
        check_finite(wav)
        mono = wav.float().mean(dim=0, keepdim=True)
        self.signal = resample(mono, sample_rate, target_rate)
        self.sample_rate = target_rate
        self.num_samples = self.signal.shape[-1]

    def read(self, start: int, stop: int) -> torch.Tensor:
        piece = self.signal[:, max(start, 0) : max(min(stop, self.num_samples), 0)]
        return torch.nn.functional.pad(piece, (max(-start, 0), stop - start - piece.shape[-1] - max(-start, 0)))


class FileSource:
    """A soundfile-readable file (path or binary file object), read span by span."""

    def __init__(self, file: str | Path | BinaryIO, target_rate: int):
        name = str(file) if isinstance(file, (str, Path)) else "input"
        if isinstance(file, (str, Path)) and Path(file).is_file() and Path(file).stat().st_size == 0:
            raise InvalidAudioError(f"{name} is empty (0 bytes)")
        try:
            self.file = sf.SoundFile(file)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
            raise InvalidAudioError(f"cannot read {name} as audio: {_reason(error)}") from None
        self.name = name
        self.input_rate = self.file.samplerate
        if not 0 < self.input_rate <= MAX_SAMPLE_RATE:
            raise InvalidAudioError(f"{name}: unsupported sample rate {self.input_rate} Hz")
        if self.file.channels < 1:
            raise InvalidAudioError(f"{name}: audio has no channels")
        frames = self.file.frames
        declared = _declared_wav_frames(file, self.file) if self.file.format in ("WAV", "WAVEX") else None
        if declared is not None and declared > frames:
            raise InvalidAudioError(f"{name}: file is truncated (header declares {declared} samples, data holds {frames})")
        if frames <= 0:
            raise InvalidAudioError(f"{name}: audio is empty (0 samples)")
        self.sample_rate = target_rate
        self.num_samples = math.ceil(frames * target_rate / self.input_rate)
        self.input_frames = frames
        self.margin = math.ceil(_RESAMPLE_MARGIN_SECONDS * self.input_rate) + 16

    def _read_input(self, start: int, stop: int) -> torch.Tensor:
        """Input-rate mono samples [1, stop - start], zero padded outside the file."""
        lo, hi = max(start, 0), min(stop, self.input_frames)
        out = np.zeros((stop - start,), dtype=np.float32)
        if hi > lo:
            try:
                self.file.seek(lo)
                data = self.file.read(hi - lo, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as error:
                raise InvalidAudioError(f"{self.name}: cannot decode audio: {_reason(error)}") from None
            if data.shape[0] < hi - lo:
                raise InvalidAudioError(f"{self.name}: file is truncated (expected {self.input_frames} samples)")
            check_finite(data, self.name)
            out[lo - start : lo - start + data.shape[0]] = data.mean(axis=1)
        return torch.from_numpy(out)[None]

    def read(self, start: int, stop: int) -> torch.Tensor:
        if self.input_rate == self.sample_rate:
            return self._read_input(start, stop)
        g = math.gcd(self.input_rate, self.sample_rate)
        step_out, step_in = self.sample_rate // g, self.input_rate // g
        # Align the span to a point where both sample grids coincide, then crop.
        aligned = (start // step_out) * step_out
        in_start = aligned // step_out * step_in
        in_stop = math.ceil(stop * self.input_rate / self.sample_rate) + 1
        margin_blocks = math.ceil(self.margin / step_in)
        pre_in = margin_blocks * step_in
        pre_out = margin_blocks * step_out
        piece = self._read_input(in_start - pre_in, in_stop + self.margin)
        converted = resample(piece, self.input_rate, self.sample_rate)
        offset = pre_out + (start - aligned)
        result = converted[:, offset : offset + stop - start]
        # Zero what lies outside the converted signal, exactly as whole-file conversion does.
        beyond = start + result.shape[-1] - self.num_samples
        if beyond > 0:
            result[:, result.shape[-1] - beyond :] = 0
        if start < 0:
            result[:, : min(-start, result.shape[-1])] = 0
        return result


def _declared_wav_frames(file, info: sf.SoundFile) -> int | None:
    """Frames the RIFF header's data chunk declares (None if unknown), to detect truncation."""
    try:
        if isinstance(file, (str, Path)):
            with open(file, "rb") as handle:
                head = handle.read(1 << 16)
        else:
            position = file.tell()
            file.seek(0)
            head = file.read(1 << 16)
            file.seek(position)
    except (OSError, AttributeError):
        return None
    offset = 12
    while offset + 8 <= len(head):
        chunk, size = head[offset : offset + 4], int.from_bytes(head[offset + 4 : offset + 8], "little")
        if chunk == b"data":
            if size in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                return None
            frame_bytes = info.channels * {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8, "PCM_U8": 1}.get(info.subtype, 0)
            return size // frame_bytes if frame_bytes else None
        offset += 8 + size + (size & 1)
    return None


def _reason(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    # libsndfile says "Error opening 'PATH': Reason." (or an unquoted object repr for in-memory
    # input); the name is already in our message and a repr must not reach users.
    return re.sub(r"^error opening .*?: ", "", lines[-1], flags=re.IGNORECASE).rstrip(".").lower()


def open_audio(file: str | Path | BinaryIO | bytes, target_rate: int) -> FileSource:
    """Open audio from a path, a binary file object or bytes, for reading at target_rate."""
    if isinstance(file, (bytes, bytearray)):
        if not file:
            raise InvalidAudioError("input is empty (0 bytes)")
        file = io.BytesIO(file)
    return FileSource(file, target_rate)


def write_audio(file: str | Path | BinaryIO, wav: torch.Tensor, sample_rate: int, format: str = "WAV") -> None:
    """Write mono wav [1, T] (or [T]) as 16-bit PCM."""
    data = wav.detach().reshape(-1).clamp(-1, 1).cpu().numpy()
    sf.write(file, data, sample_rate, format=format, subtype="PCM_16")
