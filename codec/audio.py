"""Audio in and out: reading any soundfile-supported file in bounded memory, checking it, and
converting it to the model's sample rate and a single channel; writing 16-bit WAV or FLAC.

`AudioSource` is what the windowed encoder reads from: it serves any span of the converted signal
on request, so an hour-long file is never held in memory at once. A file source resamples each
span with extra margin and crops it, which gives the same samples as resampling the whole file.
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import Iterable
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
            raise InvalidAudioError(
                f"{name}: file is truncated (header declares {declared} samples, data holds {frames})"
            )
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
            frame_bytes = info.channels * {
                "PCM_16": 2,
                "PCM_24": 3,
                "PCM_32": 4,
                "FLOAT": 4,
                "DOUBLE": 8,
                "PCM_U8": 1,
            }.get(info.subtype, 0)
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


def write_audio(
    file: str | Path | BinaryIO, wav: torch.Tensor | np.ndarray, sample_rate: int, format: str = "wav"
) -> None:
    """Write mono wav [1, T] (or [T]) to a path or binary file as 16-bit WAV or FLAC."""
    samples = _samples(wav)
    if isinstance(file, (str, Path)):
        with open(file, "wb") as handle:
            write_pieces(handle, [samples], sample_rate, len(samples), format)
    else:
        write_pieces(file, [samples], sample_rate, len(samples), format)


def write_pieces(
    out: BinaryIO, pieces: Iterable[torch.Tensor | np.ndarray], sample_rate: int, num_samples: int, format: str = "wav"
) -> None:
    """Write consecutive mono pieces [1, L], num_samples in all, to `out` as 16-bit WAV or FLAC,
    one piece at a time, so that a long decoding streams (WAV to a pipe too). The one 16-bit
    writer of the package: samples are clipped to [-1, 1] and converted by libsndfile.

    It runs NumPy and libsndfile, no PyTorch op, so that it may run outside the server's model
    thread (see server.engine)."""
    fmt = format.lower()
    if fmt == "wav":
        # The length is known up front, so the header goes first and the samples stream after it.
        out.write(_wav_header(num_samples, sample_rate))
        written = 0
        for piece in pieces:
            samples = _samples(piece)
            out.write(_pcm16(samples, sample_rate))
            written += len(samples)
        if written != num_samples:
            raise ValueError(f"the WAV header announced {num_samples} samples, the pieces held {written}")
        return
    if fmt != "flac":
        raise ValueError(f"unsupported audio format {format!r}: wav or flac")
    # libsndfile seeks back to the start to finish a FLAC file: anything else than a seekable
    # file at its start (a pipe) gets it from memory once complete.
    target = out if _at_seekable_start(out) else io.BytesIO()
    with sf.SoundFile(target, "w", sample_rate, 1, format="FLAC", subtype="PCM_16") as flac:
        for piece in pieces:
            flac.write(_samples(piece))
    if target is not out:
        out.write(target.getvalue())


def _samples(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    """Mono samples [T] float32, clipped to [-1, 1]."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    return np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)


def _pcm16(samples: np.ndarray, sample_rate: int) -> bytes:
    """Little-endian 16-bit PCM, converted by libsndfile exactly as in a WAV or FLAC file it writes."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="RAW", subtype="PCM_16", endian="LITTLE")
    return buffer.getvalue()


def _wav_header(num_samples: int, sample_rate: int) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV file (as libsndfile writes it)."""
    data_bytes = num_samples * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def _at_seekable_start(file: BinaryIO) -> bool:
    try:
        return file.seekable() and file.tell() == 0
    except (AttributeError, OSError, ValueError):
        return False
