"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from server.deps import Authorized
from server.errors import error_responses
from server.schemas import Status

router = APIRouter(tags=["operations"])


@router.get("/livez", summary="The process is up", response_model=Status)
async def livez() -> Status:
    return Status(status="alive")


@router.get(
    "/readyz",
    summary="Models loaded and warmed up, and not shutting down",
    response_model=Status,
    responses=error_responses({503: "loading, draining before shutdown, or overloaded (a full queue)"}),
)
async def readyz(request: Request):
    state = request.app.state
    if state.draining:
        return JSONResponse({"detail": "shutting down"}, status_code=503)
    if not state.ready:
        return JSONResponse({"detail": "loading the model"}, status_code=503)
    if reason := state.engine.overloaded():
        return JSONResponse({"detail": f"overloaded: {reason}"}, status_code=503)
    return Status(status="ready")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    dependencies=[Authorized],
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        **error_responses({401: "missing or wrong API key"}),
    },
)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
