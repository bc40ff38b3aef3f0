"""The codec's HTTP service: `uvicorn --factory server.app:create_app`.

`create_app(settings)` builds the app and does no model work; the lifespan hook loads the codec
(and the prior, when there is one) in the model's executor thread, runs one warm-up batch, starts
the batchers, and only then reports ready. On SIGTERM readiness fails at once, uvicorn finishes
the requests in flight, and the lifespan's exit stops the batchers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI

from codec import Codec
from codec.api import BUNDLED_CHECKPOINT
from codec.errors import CheckpointError
from codec.prior_api import TokenPrior
from server.engine import CodecEngine
from server.errors import install_error_handlers
from server.metrics import Metrics
from server.middleware import RequestMiddleware
from server.routes import decode, encode, health, model, sample
from server.settings import BUNDLED_PRIOR, Settings

logger = logging.getLogger("server")

DOCS_PATHS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}

DESCRIPTION = """Neural audio codec: audio to discrete tokens and back, and new tokens from a prior.

`POST /encode` a WAV, FLAC or Ogg file (any rate, any channels) to get its codes;
`POST /decode` the codes to get 16 kHz audio. Errors are JSON: `{"detail": "..."}`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    app = FastAPI(title="vqcodec", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.engine = None
    app.state.ready = False
    app.state.draining = False
    install_error_handlers(app, settings.retry_after_s)
    public = {"/livez", "/readyz"} | (DOCS_PATHS if settings.public_docs else set())
    app.add_middleware(
        RequestMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        api_key=settings.api_key.get_secret_value() if settings.api_key is not None else None,
        public_paths=frozenset(public),
    )
    for router in (encode.router, decode.router, sample.router, model.router, health.router):
        app.include_router(router)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # One thread for all model work: batches never compete for the same cores or GPU.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    loop = asyncio.get_running_loop()
    engine = await loop.run_in_executor(executor, load_engine, settings, app.state.metrics, executor)
    if settings.warmup:
        await loop.run_in_executor(executor, engine.warmup)
    for batcher in engine.batchers:
        batcher.start()
    app.state.engine = engine
    app.state.ready = True
    restore_signal = _fail_readiness_on_sigterm(app)
    logger.info("ready: %s on %s", engine.codec.model_id, engine.codec.device)
    try:
        yield
    finally:
        app.state.draining = True
        app.state.ready = False
        restore_signal()
        for batcher in engine.batchers:
            await batcher.stop()
        executor.shutdown(wait=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_engine(settings: Settings, metrics: Metrics, executor: Executor) -> CodecEngine:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    codec = Codec.load(settings.checkpoint, device=device)
    if settings.half:
        if device.type == "cuda":
            codec.model.half()  # the model keeps its STFTs and codebook search in float32
        else:
            logger.warning("half precision is for CUDA only; running %s in float32", device)
    prior, reason = load_prior(settings.prior_checkpoint, codec, device)
    digest = _sha256(settings.checkpoint or BUNDLED_CHECKPOINT)
    return CodecEngine(codec, settings, metrics, executor, digest, prior, reason)


def load_prior(path: Path | None, codec: Codec, device: torch.device) -> tuple[TokenPrior | None, str | None]:
    """-> (TokenPrior or None, why there is none). A missing bundled prior is not an error."""
    if path is None:
        return None, "the prior is turned off (CODEC_PRIOR_CHECKPOINT is empty)"
    if not path.exists():
        if path == BUNDLED_PRIOR:
            logger.warning("no bundled prior at %s; /sample is off", path)
            return None, "this installation has no prior model"
        raise CheckpointError(f"prior checkpoint {path} does not exist")
    prior = TokenPrior.load(str(path), device=str(device))
    if reason := prior.mismatch(codec):
        logger.warning("%s; /sample is off", reason)
        return None, reason
    return prior, None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fail_readiness_on_sigterm(app: FastAPI) -> Callable[[], None]:
    """Chain a SIGTERM handler in front of the server's own (uvicorn's), so that readiness fails
    the moment the signal arrives rather than after the requests in flight are done."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals reach only the main thread (e.g. not under a test client)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame) -> None:
        app.state.draining = True
        app.state.ready = False
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return restore
