"""POST /decode: codes in (the JSON from /encode, or the codec's binary file), audio out."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from server.deps import Authorized, EngineDep
from server.engine import CodecEngine, DecodeJob
from server.errors import model_work_responses, unprocessable, validation_message
from server.media import (
    BYTES_PER_CODE,
    STREAM_TYPE,
    audio_format,
    audio_response,
    content_type,
    json_body,
    unless_disconnected,
    unsupported,
)
from server.schemas import TokensIn

router = APIRouter(tags=["codec"], dependencies=[Authorized])

REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": TokensIn.model_json_schema()},
        STREAM_TYPE: {
            "schema": {"type": "string", "format": "binary"},
            "description": "the file /encode returns with Accept: application/octet-stream "
            "(packed, or entropy-coded with entropy=true)",
        },
    },
}
ERRORS = model_work_responses(
    {
        400: "damaged binary stream (truncated, bad CRC, written by another model)",
        413: "body or number of frames over the limits",
        415: "not application/json or application/octet-stream",
        422: "malformed JSON, or codes of the wrong shape or range, or for another model",
        503: "queue full (see Retry-After), model not loaded, or an entropy-coded stream and no prior loaded",
    }
)


@router.post(
    "/decode",
    summary="Decode codes into audio",
    response_class=Response,
    openapi_extra={"requestBody": REQUEST_BODY},
    responses={
        200: {
            "content": {"audio/wav": {}, "audio/flac": {}},
            "description": "16-bit mono audio at the model's rate (FLAC with format=flac or Accept: audio/flac)",
        },
        **ERRORS,
    },
)
async def decode(
    request: Request,
    engine: EngineDep,
    format: Annotated[Literal["wav", "flac"] | None, Query(description="default: from Accept, else wav")] = None,
):
    media = content_type(request)
    if media not in ("application/json", STREAM_TYPE):
        raise unsupported(media, ("application/json", STREAM_TYPE))
    with engine.decoder.expecting() as expected:  # batches forming now wait for this one
        if media == "application/json":
            limit = engine.codec.config.quantizer.num_levels * engine.max_frames * BYTES_PER_CODE + 65536
            job = await run_in_threadpool(_parse_json, engine, await json_body(request, limit))
        else:
            job = await engine.read_stream(await request.body())
        wav = await unless_disconnected(request, engine.decode(job, expected))
    return await audio_response(wav, engine.codec.sample_rate, audio_format(request, format))


def _parse_json(engine: CodecEngine, body: bytes) -> DecodeJob:
    try:
        tokens = TokensIn.model_validate_json(body)
    except ValidationError as error:
        raise unprocessable(validation_message(error)) from None
    codec = engine.codec
    if tokens.model_id is not None and tokens.model_id != codec.model_id:
        raise unprocessable(f"codes were written by model {tokens.model_id}, this server runs {codec.model_id}")
    if tokens.sample_rate is not None and tokens.sample_rate != codec.sample_rate:
        raise unprocessable(f"codes are for {tokens.sample_rate} Hz, this model runs at {codec.sample_rate} Hz")
    return engine.check_codes(tokens.codes, tokens.num_samples)
