"""ASGI middleware around every request: the API key, the body size limit, and request metrics.

The API key is checked from the headers alone, before any of the body is read, so a client
without it cannot make the server read or parse anything. The size limit is enforced twice: a
declared `Content-Length` over the limit is refused before a byte of the body is read, and a
chunked body is counted as it arrives, so that no request can make the server buffer more than
`max_body_bytes`.
"""

from __future__ import annotations

import hmac
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError
from server.metrics import Metrics


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds {limit} bytes", "too_large")


UNAUTHORIZED = "missing or wrong API key (Authorization: Bearer <key>)"


def key_matches(authorization: str | None, key: str) -> bool:
    """Whether an Authorization header value carries `key` as a bearer token. Constant time, so
    the response time says nothing about how much of a guess was right."""
    scheme, _, token = (authorization or "").partition(" ")
    given = token.strip().encode() if scheme.lower() == "bearer" else b""
    return hmac.compare_digest(given, key.encode())


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        api_key: str | None = None,
        public_paths: frozenset[str] = frozenset(),
    ):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()
        self.metrics.in_flight.inc()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.api_key is not None and scope["path"] not in self.public_paths:
                if not key_matches(_header(scope, b"authorization"), self.api_key):
                    status = 401
                    self.metrics.errors.labels("unauthorized").inc()
                    await _send_json(send, 401, UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
                    return
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                status = 413
                self.metrics.errors.labels("too_large").inc()
                await _send_json(send, 413, f"request body exceeds {self.max_body_bytes} bytes")
                return
            await self.app(scope, self._limited(receive), send_and_record)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            self.metrics.request_duration.labels(
                scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).observe(time.perf_counter() - started)

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        return limited_receive


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


async def _send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
