"""Server configuration, read from `CODEC_*` environment variables (pydantic-settings).

    CODEC_CHECKPOINT=run/best.safetensors CODEC_API_KEY=secret \
        uvicorn --factory server.app:create_app --port 8000
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from codec.prior_api import BUNDLED_PRIOR


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CODEC_", frozen=True)

    # Models. None: the codec bundled with the package. The prior is optional: when its file
    # is missing (or the setting is empty) the server runs without it and /sample answers 503.
    checkpoint: Path | None = None
    prior_checkpoint: Path | None = BUNDLED_PRIOR
    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1', ...")
    half: bool = Field(False, description="run the models in float16 (CUDA only)")
    torch_threads: int | None = Field(None, ge=1, description="intra-op CPU threads; None: PyTorch's default")
    warmup: bool = True

    # Auth: when set, every route but /livez and /readyz needs `Authorization: Bearer <key>`,
    # checked before any of the body is read; the API docs too, unless `public_docs`.
    api_key: SecretStr | None = None
    public_docs: bool = Field(False, description="serve /docs, /redoc and /openapi.json without the key")

    # Limits on what a request may ask for.
    max_body_bytes: int = Field(64 * 2**20, ge=1024)
    max_audio_seconds: float = Field(600.0, gt=0)
    min_sample_rate: int = Field(1000, ge=1)
    max_sample_rate: int = Field(384_000, ge=8000)
    max_channels: int = Field(16, ge=1)
    max_sample_seconds: float = Field(30.0, gt=0, description="longest prior sample /sample will make")

    # Dynamic batching. Inputs up to `batch_max_seconds` are batched; longer ones run alone, in
    # windows of bounded memory.
    max_batch_size: int = Field(16, ge=1)
    batch_max_wait_ms: float = Field(
        5.0, ge=0, description=("longest a batch waits for requests still being read; a lone request runs at once")
    )
    batch_max_seconds: float = Field(10.0, gt=0)
    max_queue: int = Field(256, ge=1, description="requests waiting for the model; beyond it: 503")
    request_timeout_s: float = Field(60.0, gt=0, description="queue wait plus model time; beyond it: 504")
    retry_after_s: int = Field(1, ge=0)

    @field_validator("checkpoint", "prior_checkpoint", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        # CODEC_PRIOR_CHECKPOINT= (empty) turns the prior off.
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value != "auto" and value.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {value!r}")
        return value
