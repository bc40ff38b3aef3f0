"""POST /encode: audio in (multipart file or raw body), codes out (JSON or the codec's file)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from codec.api import EncodedAudio
from server.deps import Authorized, EngineDep
from server.errors import ApiError, model_work_responses, unprocessable
from server.media import (
    AUDIO_TYPES,
    STREAM_TYPE,
    accepts,
    content_type,
    tokens_response,
    unless_disconnected,
    unsupported,
)
from server.schemas import Tokens

router = APIRouter(tags=["codec"], dependencies=[Authorized])

_binary = {"schema": {"type": "string", "format": "binary"}}
REQUEST_BODY = {
    "required": True,
    "description": "Audio in any sample rate and channel count: a multipart upload (field `file`) or the raw bytes.",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        },
        **{media: _binary for media in ("audio/wav", "audio/flac", "audio/ogg")},
    },
}
ERRORS = model_work_responses(
    {
        400: "unreadable, empty or non-finite audio, or an absurd sample rate or channel count",
        413: "body or audio duration over the limits",
        415: "not multipart or an audio content type",
        422: "invalid parameter (bitrate, or entropy=true without Accept: application/octet-stream)",
        503: "queue full (see Retry-After), model not loaded, or entropy=true and no prior loaded",
    }
)


@router.post(
    "/encode",
    summary="Encode audio into codes",
    response_model=Tokens,
    openapi_extra={"requestBody": REQUEST_BODY},
    responses={
        200: {
            "content": {STREAM_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "Tokens as JSON, or the codec's binary file with `Accept: application/octet-stream`",
        },
        **ERRORS,
    },
)
async def encode(
    request: Request,
    engine: EngineDep,
    bitrate: Annotated[
        float | None, Query(gt=0, allow_inf_nan=False, description="kbps; default: the highest", examples=[3.0])
    ] = None,
    entropy: Annotated[
        bool,
        Query(
            description="entropy-code the binary file with the token prior (about a "
            "quarter smaller; needs Accept: application/octet-stream)"
        ),
    ] = False,
    pitch: Annotated[
        bool,
        Query(
            description="also send the input's f0 in the binary file (about 0.2 kbps; the "
            "decoder's pulses stay in phase with the input; needs Accept: "
            "application/octet-stream)"
        ),
    ] = False,
):
    if entropy and not accepts(request, STREAM_TYPE):
        raise unprocessable("entropy=true gives the binary file: send Accept: application/octet-stream")
    if pitch and not accepts(request, STREAM_TYPE):
        raise unprocessable("pitch=true gives the binary file: send Accept: application/octet-stream")
    with engine.encoder.expecting() as expected:  # batches forming now wait for this one
        data = await _read_audio(request)

        async def read_and_encode():
            job = await engine.read_audio(data, bitrate)  # waits for the model thread, like the batch
            return job, await engine.encode(job, expected)  # codes [K, N]

        job, codes = await unless_disconnected(request, read_and_encode())
    codec = engine.codec
    if accepts(request, STREAM_TYPE):
        tracks = [await engine.pitch_track(job, data)] if pitch else None
        encoded = EncodedAudio(codes[None], job.num_samples, codec.sample_rate, codec.model_id, tracks)
        return Response(await engine.to_bytes(encoded, entropy), media_type=STREAM_TYPE)
    return tokens_response(engine.codec, codes, job.num_samples)


async def _read_audio(request: Request) -> bytes:
    media = content_type(request)
    if media == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "multipart body needs a file field named 'file'", "invalid_audio")
            return await upload.read()
    if media in AUDIO_TYPES or media == STREAM_TYPE:
        return await request.body()
    raise unsupported(media, ("multipart/form-data",) + AUDIO_TYPES)
