"""The JSON bodies of the API, with the examples shown in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

CODES_EXAMPLE = [[512, 17, 903, 44], [3, 250, 250, 1000]]

CodeRows = Annotated[
    list[Annotated[list[StrictInt], Field(max_length=1_000_000)]],
    Field(min_length=1, max_length=64, description="one integer array per level: [K][N]"),
]


class Tokens(BaseModel):
    """Codes with what is needed to decode them; /encode and /sample return it, /decode takes it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "codes": CODES_EXAMPLE,
                    "num_samples": 1280,
                    "sample_rate": 16000,
                    "frame_rate": 50.0,
                    "num_levels": 2,
                    "codebook_size": 1024,
                    "bitrate": 1.0,
                    "duration": 0.08,
                    "model_id": "vqcodec-16k:0123456789ab",
                }
            ]
        }
    )

    codes: list[list[int]] = Field(description="[K][N]: K levels, N frames")
    num_samples: int = Field(description="length of the audio at sample_rate; decoding crops to it")
    sample_rate: int
    frame_rate: float
    num_levels: int
    codebook_size: int
    bitrate: float = Field(description="kbps of the codes")
    duration: float = Field(description="seconds")
    model_id: str = Field(description="model that wrote the codes (name and weights hash)")


class TokensIn(BaseModel):
    """Codes to decode: the `Tokens` that /encode returns (extra fields are ignored)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "codes": CODES_EXAMPLE,
                    "num_samples": 1280,
                    "model_id": "vqcodec-16k:0123456789ab",
                }
            ]
        },
    )

    codes: CodeRows
    num_samples: int | None = Field(None, ge=0, le=2**40, description="default: every frame, N x hop samples")
    sample_rate: int | None = Field(None, description="if given, must be the model's rate")
    model_id: str | None = Field(None, max_length=256, description="if given, must be the loaded model's id")


class SampleRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"seconds": 3.0, "temperature": 0.9, "top_k": 50, "seed": 7},
                {"seconds": 4.0, "prompt": CODES_EXAMPLE},
            ]
        },
    )

    seconds: float = Field(gt=0, allow_inf_nan=False, description="seconds to sample (after the prompt, if any)")
    temperature: float = Field(
        1.0, ge=0, le=10, allow_inf_nan=False, description="0: always the most likely code; else at least 0.01"
    )
    top_k: int | None = Field(None, ge=1, description="sample among the k most likely codes; None: all")
    seed: int = Field(0, ge=0, lt=2**63)
    prompt: CodeRows | None = Field(
        None, description="codes [K][P] to continue; the answer starts with them and has their K levels"
    )


class PriorInfo(BaseModel):
    loaded: bool
    reason: str | None = Field(None, description="why no prior is loaded")
    num_levels: int | None = None
    codebook_size: int | None = None
    frame_rate: float | None = None
    codec_model_id: str | None = None


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_id: str
    checkpoint_sha256: str
    sample_rate: int
    frame_rate: float
    hop_length: int
    num_levels: int
    codebook_size: int
    bitrates: list[float] = Field(description="kbps offered; entry k is k + 1 levels")
    parameters: int
    device: str
    dtype: str
    max_batch_size: int
    max_audio_seconds: float
    prior: PriorInfo


class Status(BaseModel):
    status: str
