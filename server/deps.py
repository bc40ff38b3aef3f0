"""Dependencies the routes declare: the loaded models, the settings, and the API key check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.engine import CodecEngine
from server.errors import ApiError
from server.middleware import UNAUTHORIZED, key_matches
from server.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="the server's API key, when it has one")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> CodecEngine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise ApiError(503, "the model is not loaded yet", "not_ready", {"Retry-After": "5"})
    return engine


def require_api_key(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The routes' declaration of the key (it puts the bearer scheme in the OpenAPI schema); the
    request middleware has already refused requests without it, before reading their bodies."""
    if settings.api_key is None:
        return
    given = f"Bearer {credentials.credentials}" if credentials is not None else None
    if not key_matches(given, settings.api_key.get_secret_value()):
        raise ApiError(401, UNAUTHORIZED, "unauthorized", {"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[CodecEngine, Depends(get_engine)]
Authorized = Depends(require_api_key)
