"""Request and response bodies: content types, content negotiation, audio out, disconnects."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable
from typing import TypeVar

import torch
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from codec import Codec
from codec.api import write_audio
from server.errors import ApiError, too_large
from server.schemas import Tokens

T = TypeVar("T")

AUDIO_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac", "audio/x-flac", "audio/ogg")
STREAM_TYPE = "application/octet-stream"
OUTPUT_FORMATS = {"wav": "audio/wav", "flac": "audio/flac"}


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def accepts(request: Request, media_type: str) -> bool:
    """Whether the Accept header names `media_type` explicitly (wildcards do not count)."""
    accept = request.headers.get("accept", "").lower()
    return any(part.split(";")[0].strip() == media_type for part in accept.split(","))


def unsupported(got: str, expected: tuple[str, ...]) -> ApiError:
    return ApiError(
        415,
        f"unsupported content type {got or '(none)'!r}; send one of: {', '.join(expected)}",
        "unsupported_media_type",
    )


def audio_format(request: Request, requested: str | None) -> str:
    """'wav' or 'flac': the `format` parameter if given, else the Accept header, else WAV."""
    if requested is not None:
        return requested
    return "flac" if accepts(request, "audio/flac") and not accepts(request, "audio/wav") else "wav"


def _encode_audio(wav: torch.Tensor, sample_rate: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    write_audio(buffer, wav, sample_rate, fmt)  # no PyTorch op: this runs outside the model thread
    return buffer.getvalue()


async def audio_response(wav: torch.Tensor, sample_rate: int, fmt: str) -> Response:
    """wav [1, T] -> 16-bit WAV or FLAC."""
    body = await run_in_threadpool(_encode_audio, wav, sample_rate, fmt)
    return Response(body, media_type=OUTPUT_FORMATS[fmt])


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work` (after the body has been read); if the client goes away first, cancel it, so
    that a queued job leaves the queue instead of reaching the model for nobody."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    watcher.cancel()
    if task not in done:
        task.cancel()
        raise ApiError(499, "client closed the request", "disconnected")
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def tokens_response(codec: Codec, codes: torch.Tensor, num_samples: int) -> Response:
    """codes [K, N] -> the JSON answer (built without re-validating what the model produced)."""
    config = codec.config
    body = Tokens.model_construct(
        codes=codes.tolist(),
        num_samples=num_samples,
        sample_rate=config.sample_rate,
        frame_rate=config.frame_rate,
        num_levels=codes.shape[0],
        codebook_size=config.quantizer.codebook_size,
        bitrate=config.bitrate(codes.shape[0]) / 1000,
        duration=num_samples / config.sample_rate,
        model_id=codec.model_id,
    )
    return Response(body.model_dump_json(), media_type="application/json")


BYTES_PER_CODE = 16  # generous for JSON: "1023, " plus any whitespace


async def json_body(request: Request, limit: int) -> bytes:
    """The body of a JSON request, refused (413) past `limit` bytes before it is parsed: a JSON
    array of ints costs ~40x its size in Python objects. 415 unless the body is JSON."""
    media = content_type(request)
    if media != "application/json":
        raise unsupported(media, ("application/json",))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(f"JSON body of {declared} bytes exceeds {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise too_large(f"JSON body of {len(body)} bytes exceeds {limit} bytes")
    return body
