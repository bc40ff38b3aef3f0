"""POST /sample: new codes from the token prior (optionally continuing a prompt), or their audio."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from server.deps import Authorized, EngineDep, SettingsDep
from server.engine import DecodeJob, SampleJob
from server.errors import ApiError, model_work_responses, unprocessable, validation_message
from server.media import (
    BYTES_PER_CODE,
    accepts,
    audio_format,
    audio_response,
    json_body,
    tokens_response,
    unless_disconnected,
)
from server.schemas import SampleRequest, Tokens

router = APIRouter(tags=["prior"], dependencies=[Authorized])

MIN_TEMPERATURE = 0.01
REQUEST_BODY = {"required": True, "content": {"application/json": {"schema": SampleRequest.model_json_schema()}}}

ERRORS = model_work_responses(
    {
        413: "body over the size limit (a prompt of the longest sample, as JSON)",
        415: "not application/json",
        422: "invalid JSON, parameters or prompt",
        503: "no prior loaded, or queue full (see Retry-After)",
    }
)


@router.post(
    "/sample",
    summary="Sample codes from the prior",
    response_model=Tokens,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SampleRequest.model_json_schema()}},
        }
    },
    responses={
        200: {
            "content": {"audio/wav": {}, "audio/flac": {}},
            "description": "Tokens as JSON, or their audio with Accept: audio/wav (or audio/flac)",
        },
        **ERRORS,
    },
)
async def sample(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    format: Annotated[Literal["wav", "flac"] | None, Query(description="answer with audio in this format")] = None,
):
    prior = engine.prior
    if prior is None:
        raise ApiError(503, f"no prior is loaded: {engine.prior_reason}", "no_prior")
    # The longest prompt the limits allow, as JSON, and room for the other fields.
    limit = int(settings.max_sample_seconds * prior.frame_rate) * prior.num_levels * BYTES_PER_CODE + 65536
    body = await run_in_threadpool(_parse, await json_body(request, limit))
    if body.seconds > settings.max_sample_seconds:
        raise unprocessable(f"seconds must be at most {settings.max_sample_seconds:g}, got {body.seconds:g}")
    if 0 < body.temperature < MIN_TEMPERATURE:  # dividing logits by ~0 overflows to inf, then NaN
        raise unprocessable(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {body.temperature:g}")
    if body.top_k is not None and body.top_k > prior.codebook_size:
        raise unprocessable(f"top_k must be at most the codebook size {prior.codebook_size}, got {body.top_k}")
    job = SampleJob(body.seconds, body.temperature, body.top_k, body.seed, _prompt(body, prior, settings))
    codes = await unless_disconnected(request, engine.sample(job))  # [K, N]
    num_samples = codes.shape[-1] * engine.codec.config.hop_length
    if format is not None or accepts(request, "audio/wav") or accepts(request, "audio/flac"):
        wav = await unless_disconnected(request, engine.decode(DecodeJob(codes, num_samples)))
        return await audio_response(wav, engine.codec.sample_rate, audio_format(request, format))
    return tokens_response(engine.codec, codes, num_samples)


def _parse(body: bytes) -> SampleRequest:
    try:
        return SampleRequest.model_validate_json(body)
    except ValidationError as error:
        raise unprocessable(validation_message(error)) from None


def _prompt(body: SampleRequest, prior, settings) -> torch.Tensor | None:
    """The prompt rows [K][P] -> codes [1, K, P], checked against the prior."""
    if body.prompt is None:
        return None
    rows = body.prompt
    if not 1 <= len(rows) <= prior.num_levels:
        raise unprocessable(f"prompt must have 1 to {prior.num_levels} rows (levels), got {len(rows)}")
    length = len(rows[0])
    if length == 0 or any(len(row) != length for row in rows):
        raise unprocessable("prompt rows must be non-empty and all the same length")
    if length > settings.max_sample_seconds * prior.frame_rate:
        raise unprocessable(f"prompt of {length} frames is longer than {settings.max_sample_seconds:g} s")
    low, high = min(min(r) for r in rows), max(max(r) for r in rows)
    if low < 0 or high >= prior.codebook_size:
        raise unprocessable(f"prompt codes must be in [0, {prior.codebook_size}), got values in [{low}, {high}]")
    return torch.tensor(rows, dtype=torch.long)[None]
