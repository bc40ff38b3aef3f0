"""The tiny codec the tests train and run: the shipped structure at a few thousand parameters."""

from __future__ import annotations

from codec.config import CodecConfig

# Overrides of CodecConfig, nested as in its JSON: `TrainConfig(model=TINY_MODEL)` trains it.
TINY_MODEL = {
    "encoder": {"channels": 32, "dilations": [1, 3], "latent_dim": 16},
    "quantizer": {"num_levels": 4, "codebook_size": 64, "dim": 16},
    "decoder": {"channels": 32, "dilations": [1, 2, 4], "skip_channels": 32},
    "name": "vqcodec-tiny",
}


def tiny_config() -> CodecConfig:
    return CodecConfig.with_overrides(TINY_MODEL)
