"""GET /model: what is loaded and how it is served."""

from __future__ import annotations

from fastapi import APIRouter

from server.deps import Authorized, EngineDep, SettingsDep
from server.errors import error_responses
from server.schemas import ModelInfo, PriorInfo

router = APIRouter(tags=["model"], dependencies=[Authorized])


@router.get(
    "/model",
    summary="Describe the loaded models",
    response_model=ModelInfo,
    responses=error_responses({401: "missing or wrong API key", 503: "model not loaded yet"}),
)
async def model_info(engine: EngineDep, settings: SettingsDep) -> ModelInfo:
    codec, config = engine.codec, engine.codec.config
    prior = engine.prior
    return ModelInfo(
        model_id=codec.model_id,
        checkpoint_sha256=engine.checkpoint_sha256,
        sample_rate=config.sample_rate,
        frame_rate=config.frame_rate,
        hop_length=config.hop_length,
        num_levels=config.quantizer.num_levels,
        codebook_size=config.quantizer.codebook_size,
        bitrates=codec.bitrates(),
        parameters=sum(p.numel() for p in codec.model.parameters()),
        device=str(codec.device),
        dtype=str(next(codec.model.parameters()).dtype).removeprefix("torch."),
        max_batch_size=settings.max_batch_size,
        max_audio_seconds=settings.max_audio_seconds,
        prior=PriorInfo(loaded=False, reason=engine.prior_reason)
        if prior is None
        else PriorInfo(
            loaded=True,
            num_levels=prior.num_levels,
            codebook_size=prior.codebook_size,
            frame_rate=prior.frame_rate,
            codec_model_id=prior.codec_model_id,
        ),
    )
