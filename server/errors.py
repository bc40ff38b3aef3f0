"""Every error leaves the server as JSON `{"detail": "<one line>"}` with a 4xx status for bad
input, 503/504 for load, and never a 500 for anything a client can send.

`ApiError` is what routes raise; the handlers below also turn the codec's own errors, FastAPI's
validation errors and the batcher's queue errors into that shape, and count each by kind.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request

from codec.errors import CodecError, CorruptStreamError, InvalidAudioError
from server.batching import BatcherStopped, QueueFull, QueueTimeout

logger = logging.getLogger("server")


class ErrorResponse(BaseModel):
    detail: str


def error_responses(descriptions: dict[int, str]) -> dict[int, dict]:
    """OpenAPI `responses` entries for error statuses: each a JSON ErrorResponse with its description."""
    return {status: {"model": ErrorResponse, "description": text} for status, text in descriptions.items()}


def model_work_responses(descriptions: dict[int, str]) -> dict[int, dict]:
    """`error_responses` of a route that queues model work: it also answers 401 and 504."""
    common = {401: "missing or wrong API key", 504: "no answer within the request timeout"}
    return error_responses(dict(sorted({**common, **descriptions}.items())))


class ApiError(Exception):
    def __init__(self, status: int, detail: str, kind: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.kind, self.headers = status, detail, kind, headers


def too_large(detail: str) -> ApiError:
    return ApiError(413, detail, "too_large")


def unprocessable(detail: str) -> ApiError:
    return ApiError(422, detail, "invalid_tokens")


def validation_message(error: ValidationError | RequestValidationError) -> str:
    """Pydantic's errors as one line: `location: message; ...`."""
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{location}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _respond(request: Request, status: int, detail: str, kind: str, headers: dict | None = None) -> JSONResponse:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(kind).inc()
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return _respond(request, error.status, error.detail, error.kind, error.headers)

    @app.exception_handler(CodecError)
    async def codec_error(request: Request, error: CodecError):
        kind = (
            "corrupt_stream"
            if isinstance(error, CorruptStreamError)
            else ("invalid_audio" if isinstance(error, InvalidAudioError) else "codec_error")
        )
        return _respond(request, 400, str(error), kind)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, error: RequestValidationError):
        return _respond(request, 422, validation_message(error), "validation")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http")
        return _respond(request, error.status_code, str(error.detail), kind, getattr(error, "headers", None))

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, error: QueueFull):
        return _respond(
            request, 503, f"server busy: {error}; retry later", "queue_full", {"Retry-After": str(retry_after_s)}
        )

    @app.exception_handler(QueueTimeout)
    async def queue_timeout(request: Request, error: QueueTimeout):
        return _respond(request, 504, f"request timed out: {error}", "timeout")

    @app.exception_handler(BatcherStopped)
    async def stopped(request: Request, error: BatcherStopped):
        return _respond(request, 503, "server is shutting down", "shutting_down", {"Retry-After": str(retry_after_s)})

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect):
        # The client left before sending its whole body: not a server error, and nobody reads
        # the answer (499 is the status proxies log for it).
        logger.info("client disconnected during %s %s", request.method, request.url.path)
        return _respond(request, 499, "client closed the request", "disconnected")

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception):
        # A bug, never the client's input: log it in full, tell the client only that it happened.
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _respond(request, 500, "internal server error", "internal")
