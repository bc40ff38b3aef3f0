"""The models behind the routes: input checks, batched model calls, and the prior.

The model work itself is the `Codec`'s (`encode_batch`, `decode_batch`, `pitch_track`, the file
format); this module adds what serving needs: limits, queues, threads and HTTP errors.

All model work runs in one executor thread, one batch at a time, so that the event loop stays
free and batches never compete for the same cores (or GPU). So does every other PyTorch operation
of a request (reading and resampling its audio): a parallel PyTorch op on any other thread gives
that thread an OpenMP team of its own, and with more OpenMP threads than cores libgomp stops
letting its workers spin between parallel regions, which made every model call ~30% slower
(measured: 41 ms when one thread runs all PyTorch work, 54 ms when another thread has run some).

Inputs up to `batch_max_seconds` are batched by length bucket, and the codec pads each batch
to its longest item: the padding is silence the model sees past an item's end, so the codes of
its last few frames (within the encoder's receptive field) can differ from those of an unbatched
call; set `max_batch_size=1` for bit-exact reproducibility. Longer inputs run alone (their audio
read from the request's bytes window by window), and the codec takes anything longer than its
window (`Codec.window_frames`) through the model window by window, in bounded memory.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import torch
from starlette.concurrency import run_in_threadpool

from codec import Codec, EncodedAudio, PitchTrack, interruptible
from codec.api import FileSource, open_audio
from codec.errors import CorruptStreamError, InvalidAudioError
from server.batching import DynamicBatcher, Expected, QueueTimeout, length_bucket
from server.errors import ApiError, too_large, unprocessable
from server.metrics import Metrics
from server.settings import Settings

READ_SECONDS = 2.0  # span of audio converted at a time, so many channels never mean much memory


@dataclass
class AudioJob:
    """Checked input audio, ready for the encoder."""

    num_levels: int
    num_samples: int  # at the model's rate
    wav: torch.Tensor | None  # [1, T] mono at the model's rate, for inputs that are batched
    source: FileSource | None  # for long inputs, read window by window


@dataclass
class DecodeJob:
    codes: torch.Tensor  # [K, N] int64, checked
    num_samples: int
    pitch: PitchTrack | None = None  # a file's pitch side stream (codec.pitchcode); decoded alone


@dataclass(frozen=True)
class SampleJob:
    seconds: float
    temperature: float
    top_k: int | None
    seed: int
    prompt: torch.Tensor | None  # [1, K, P]


class CodecEngine:
    def __init__(
        self,
        codec: Codec,
        settings: Settings,
        metrics: Metrics,
        executor: Executor,
        checkpoint_sha256: str = "",
        prior: Any = None,
        prior_reason: str | None = "no prior checkpoint configured",
    ):
        self.codec = codec
        self.checkpoint_sha256 = checkpoint_sha256
        self.prior = prior  # a codec.prior_api.TokenPrior, or None
        self.prior_reason = None if prior is not None else prior_reason
        self.settings = settings
        self.metrics = metrics
        self.executor = executor
        self.timeout = settings.request_timeout_s
        self.max_batch_frames = max(1, int(settings.batch_max_seconds * codec.config.frame_rate))
        knobs = dict(
            executor=executor,
            max_batch_size=settings.max_batch_size,
            max_wait=settings.batch_max_wait_ms / 1000,
            max_queue=settings.max_queue,
            observer=metrics,
        )
        self.encoder = DynamicBatcher("encode", self._encode_batch, **knobs)
        self.decoder = DynamicBatcher("decode", self._decode_batch, **knobs)
        self.sampler = DynamicBatcher("sample", self._sample_batch, **knobs)

    @property
    def batchers(self) -> list[DynamicBatcher]:
        return [self.encoder, self.decoder, self.sampler]

    @property
    def max_frames(self) -> int:
        return math.ceil(self.settings.max_audio_seconds * self.codec.config.frame_rate)

    # Input checks.

    async def read_audio(self, data: bytes, bitrate: float | None) -> AudioJob:
        """`open_audio` in the model's thread (it converts and resamples with PyTorch), waiting
        at most the request timeout for that thread (QueueTimeout); not started, it never runs."""
        return await self._in_model_thread("audio not read", self.open_audio, data, bitrate)

    async def _in_model_thread(self, what: str, function, *args):
        """function(*args) in the model's thread, for at most the request timeout; when the
        caller stops waiting (timeout, disconnect) the work stops at its next checkpoint."""
        wanted = threading.Event()
        wanted.set()

        def run():
            with interruptible(wanted.is_set):
                return function(*args)

        work = asyncio.get_running_loop().run_in_executor(self.executor, run)
        try:
            return await asyncio.wait_for(work, self.timeout)
        except asyncio.TimeoutError:
            raise QueueTimeout(f"{what} within {self.timeout:g} s: the model is busy") from None
        finally:
            wanted.clear()

    def overloaded(self) -> str | None:
        """Why new model work would be refused now (a full queue), or None."""
        full = [b.name for b in self.batchers if b.full]
        return f"the {', '.join(full)} queue is full" if full else None

    def require_prior(self) -> Any:
        if self.prior is None:
            raise ApiError(503, f"no prior is loaded: {self.prior_reason}", "no_prior")
        return self.prior

    async def to_bytes(self, encoded: EncodedAudio, entropy: bool) -> bytes:
        """The codec's file for one item; entropy-coded with the prior in the model's thread."""
        if not entropy:
            return self.codec.to_bytes(encoded)
        prior = self.require_prior()
        return await self._in_model_thread("not entropy-coded", self.codec.to_bytes, encoded, prior)

    async def read_stream(self, data: bytes) -> DecodeJob:
        """The codec's binary file, packed or entropy-coded -> a DecodeJob; CorruptStreamError
        (400) if it is damaged. Its size is checked from the header before any entropy decoding,
        which runs in the model's thread."""
        stream = await run_in_threadpool(self.codec.read_stream, data)
        header = stream.header
        if header.num_frames == 0:
            raise unprocessable("stream has no frames")
        if header.num_frames > self.max_frames:
            raise too_large(f"stream holds {header.num_frames} frames; at most {self.max_frames} are accepted")
        if header.codes_coding == "packed":
            encoded = await run_in_threadpool(self.codec.from_stream, stream)
        else:
            prior = self.require_prior()
            encoded = await self._in_model_thread("stream not entropy-decoded", self.codec.from_stream, stream, prior)
        return DecodeJob(encoded.codes[0], encoded.num_samples, encoded.pitch[0] if encoded.pitch else None)

    def open_audio(self, data: bytes, bitrate: float | None) -> AudioJob:
        """Check audio bytes from their header before decoding any samples, then read them."""
        levels = self.levels(bitrate)
        s = self.settings
        source = open_audio(data, self.codec.sample_rate)
        channels = source.file.channels
        if channels > s.max_channels:
            raise InvalidAudioError(f"audio has {channels} channels; at most {s.max_channels} are accepted")
        if not s.min_sample_rate <= source.input_rate <= s.max_sample_rate:
            raise InvalidAudioError(
                f"sample rate {source.input_rate} Hz is outside the {s.min_sample_rate} to {s.max_sample_rate} "
                f"Hz accepted"
            )
        seconds = source.input_frames / source.input_rate
        if seconds > s.max_audio_seconds:
            raise too_large(f"audio lasts {seconds:.1f} s; at most {s.max_audio_seconds:g} s are accepted")
        if self.codec.num_frames(source.num_samples) > self.max_batch_frames:
            return AudioJob(levels, source.num_samples, None, source)
        step = int(READ_SECONDS * self.codec.sample_rate)
        with source.file:
            pieces = [source.read(i, min(i + step, source.num_samples)) for i in range(0, source.num_samples, step)]
        return AudioJob(levels, source.num_samples, torch.cat(pieces, dim=-1), None)

    async def pitch_track(self, job: AudioJob, data: bytes) -> PitchTrack:
        """The pitch side stream of an encoded job (`Codec.pitch_track`), read from its samples in
        memory or, for a long input, from the audio bytes again window by window."""
        if job.wav is not None:
            return await run_in_threadpool(self.codec.pitch_track, job.wav)
        source = open_audio(data, self.codec.sample_rate)

        def analyse() -> PitchTrack:
            with source.file:
                return self.codec.pitch_track(source)

        return await run_in_threadpool(analyse)

    def levels(self, bitrate: float | None) -> int:
        try:
            return self.codec.num_levels(bitrate)
        except InvalidAudioError as error:
            offered = ", ".join(f"{b:g}" for b in self.codec.bitrates())
            raise ApiError(422, f"{error}; offered: {offered} kbps", "invalid_bitrate") from None

    def check_codes(self, codes: Sequence[Sequence[int]], num_samples: int | None, what: str = "codes") -> DecodeJob:
        """Token rows [K][N] from JSON -> a DecodeJob; a 413 if they are too long for this
        server, a 422 naming the problem if they are not the model's (`Codec.check_codes`)."""
        frames = len(codes[0]) if codes else 0
        if any(len(row) != frames for row in codes):
            raise unprocessable(
                f"{what} rows must all have the same length; got lengths {sorted({len(r) for r in codes})}"
            )
        if frames == 0:
            raise unprocessable(f"{what} have no frames")
        if frames > self.max_frames:
            raise too_large(f"{what} hold {frames} frames; at most {self.max_frames} are accepted")
        if num_samples is None:
            num_samples = frames * self.codec.config.hop_length
        tensor = _code_tensor(codes)
        try:
            self.codec.check_codes(tensor, num_samples, what)
        except CorruptStreamError as error:
            raise unprocessable(str(error)) from None
        return DecodeJob(tensor, num_samples)

    # Model calls (awaited on the event loop, run in the executor).

    async def encode(self, job: AudioJob, expected: Expected | None = None) -> torch.Tensor:
        """-> codes [K, N]; `expected`: the announcement of this job (DynamicBatcher.expecting)."""
        alone = job.source is not None
        frames = self.codec.num_frames(job.num_samples)
        codes = await self.encoder.submit((job.num_levels, length_bucket(frames)), job, self.timeout, alone, expected)
        self.metrics.audio_seconds.labels("encode").inc(job.num_samples / self.codec.sample_rate)
        return codes

    async def decode(self, job: DecodeJob, expected: Expected | None = None) -> torch.Tensor:
        """-> wav [1, num_samples] at the model's rate."""
        frames = job.codes.shape[-1]
        alone = frames > self.max_batch_frames or job.pitch is not None
        wav = await self.decoder.submit((job.codes.shape[0], length_bucket(frames)), job, self.timeout, alone, expected)
        self.metrics.audio_seconds.labels("decode").inc(job.num_samples / self.codec.sample_rate)
        return wav

    async def sample(self, job: SampleJob) -> torch.Tensor:
        """-> codes [K, N] from the prior."""
        codes = await self.sampler.submit("sample", job, self.timeout, alone=True)
        self.metrics.audio_seconds.labels("sample").inc(codes.shape[-1] / self.codec.config.frame_rate)
        return codes

    def _encode_batch(self, key: Hashable, jobs: Sequence[AudioJob]) -> list[torch.Tensor]:
        levels = jobs[0].num_levels  # one per batch: it is part of the key
        if jobs[0].source is not None:  # a long input, alone in its batch
            with jobs[0].source.file:
                return self.codec.encode_batch([jobs[0].source], levels)
        return self.codec.encode_batch([job.wav for job in jobs], levels)

    def _decode_batch(self, key: Hashable, jobs: Sequence[DecodeJob]) -> list[torch.Tensor]:
        return self.codec.decode_batch(
            [job.codes for job in jobs], [job.num_samples for job in jobs], [job.pitch for job in jobs]
        )

    def _sample_batch(self, key: Hashable, jobs: Sequence[SampleJob]) -> list[torch.Tensor]:
        job = jobs[0]
        try:
            codes = self.prior.sample(
                job.seconds, temperature=job.temperature, top_k=job.top_k, seed=job.seed, prompt=job.prompt
            )  # [1, K, N]
        except ValueError as error:  # the prior's own argument checks
            raise unprocessable(str(error)) from None
        return [codes[0].cpu().long()]

    def warmup(self) -> None:
        """One small batch through encoder and decoder (and the prior), so the first request is not slow."""
        second = torch.zeros(1, self.codec.sample_rate)
        codes = self.codec.encode_batch([second, second])
        self.codec.decode_batch(codes, [self.codec.sample_rate] * 2)
        if self.prior is not None:
            self.prior.sample(2 / self.prior.frame_rate, seed=0)


def _code_tensor(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Token rows [K][N] -> codes [K, N] int64; a value beyond int64 (out of range for any
    codebook) is clipped to it, so that the codec's check reports it."""
    try:
        return torch.tensor(rows, dtype=torch.long)
    except (OverflowError, RuntimeError, ValueError):
        bound = 2**63 - 1
        return torch.tensor([[max(-bound, min(value, bound)) for value in row] for row in rows], dtype=torch.long)
