"""Frozen configuration dataclasses for the codec, one per part.

The whole `CodecConfig` is stored as JSON inside every checkpoint, so a checkpoint fully
describes the network it holds; `from_dict` rejects unknown keys so that a mismatched file fails
loudly instead of silently building a different model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class EncoderConfig:
    # The encoder sees STFT log-magnitudes at `stft_hop` samples per frame, so every convolution
    # runs at frame rate, never at the waveform rate. Magnitudes rather than complex values: a
    # pseudo-random phase would have to be untangled from them first, and the decoder makes its
    # own phase anyway.
    n_fft: int = 640
    stft_hop: int = 160
    channels: int = 256
    # Residual blocks at the STFT frame rate, one dilation each, before the strided downsampling
    # to the code frame rate.
    dilations: tuple[int, ...] = (1, 3, 9, 1, 3, 9)
    kernel_size: int = 3
    latent_dim: int = 128


@dataclass(frozen=True)
class QuantizerConfig:
    # Residual levels: each picks the entry nearest in L2 distance to what the levels before it
    # left, in the full latent space (the VQ-VAE paper; EnCodec). One level is
    # `log2(codebook_size)` bits per frame, so the bitrate is chosen by how many levels are kept.
    num_levels: int = 12
    codebook_size: int = 1024
    dim: int = 128
    commitment_weight: float = 0.25
    # Codebooks follow exponential moving averages of their assigned vectors (the paper's
    # appendix; EnCodec) rather than learning from a codebook loss.
    ema_decay: float = 0.99
    # Entries whose EMA count falls below this fraction of the average entry's are restarted.
    dead_code_threshold: float = 0.1
    # A restarted entry is put this fraction of the way from the entry a random batch vector
    # belongs to towards that vector, so it splits that entry's cell (1: on the vector itself,
    # which in a high-dimensional space wins almost nothing).
    split_step: float = 0.1
    # Probability that a training item is quantized with a random number of levels.
    level_dropout: float = 1.0

    # Fields that steer training alone: configs differing only in these hold the same tensors and
    # quantize alike, so a warm start carries the codebooks over.
    TRAINING_FIELDS: ClassVar[tuple[str, ...]] = (
        "commitment_weight",
        "ema_decay",
        "dead_code_threshold",
        "split_step",
        "level_dropout",
    )


@dataclass(frozen=True)
class DecoderConfig:
    channels: int = 160
    # Gated (tanh x sigmoid) dilated residual layers at the decoder frame rate; one entry a layer.
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8)
    kernel_size: int = 3
    skip_channels: int = 160
    # The decoder upsamples the codes' frame rate by this factor before the WaveNet stack, and the
    # inverse STFT head turns each decoder frame into `hop` new samples.
    upsample: int = 2
    n_fft: int = 640
    # The range of f0 the head's pitch predictor can give voiced frames (codec.decoder).
    pitch_min_hz: float = 60.0
    pitch_max_hz: float = 400.0


@dataclass(frozen=True)
class CodecConfig:
    sample_rate: int = 16000
    hop_length: int = 320  # samples per code frame: 50 frames/s at 16 kHz
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    name: str = "vqcodec-16k"

    def __post_init__(self) -> None:
        if self.hop_length % self.encoder.stft_hop:
            raise ValueError("hop_length must be a multiple of encoder.stft_hop")
        if self.hop_length % self.decoder.upsample:
            raise ValueError("hop_length must be a multiple of decoder.upsample")
        if not 0 < self.decoder.pitch_min_hz < self.decoder.pitch_max_hz < self.sample_rate / 4:
            raise ValueError("need 0 < decoder.pitch_min_hz < decoder.pitch_max_hz < sample_rate / 4")
        if self.encoder.latent_dim != self.quantizer.dim:
            raise ValueError("encoder.latent_dim must equal quantizer.dim")
        # The name goes into every stream header as part of the model id (printable ASCII, short).
        if not (1 <= len(self.name) <= 48 and all(0x20 < ord(c) < 0x7F for c in self.name)):
            raise ValueError("name must be 1 to 48 printable ASCII characters without spaces")

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def bits_per_code(self) -> int:
        return max(1, math.ceil(math.log2(self.quantizer.codebook_size)))

    def bitrate(self, num_levels: int) -> float:
        """Bits per second of the packed codes when `num_levels` levels are kept."""
        return num_levels * self.bits_per_code * self.frame_rate

    def levels_for_bitrate(self, kbps: float | None) -> int:
        """The largest number of levels whose bitrate does not exceed `kbps` (None: all)."""
        if kbps is None:
            return self.quantizer.num_levels
        if not math.isfinite(kbps) or kbps <= 0:
            raise ValueError(f"bitrate must be a positive number of kbps, got {kbps}")
        levels = int(kbps * 1000 // self.bitrate(1))
        if levels < 1:
            lowest = self.bitrate(1) / 1000
            raise ValueError(f"bitrate {kbps} kbps is below the lowest this model offers ({lowest:g} kbps)")
        return min(levels, self.quantizer.num_levels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def with_overrides(cls, overrides: dict[str, Any]) -> CodecConfig:
        """The default config with `overrides`, nested as in `to_dict` (e.g.
        {"decoder": {"channels": 64}}): a part's fields not named keep their defaults."""
        data = cls().to_dict()
        for key, value in overrides.items():
            data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        parts = {"encoder": EncoderConfig, "quantizer": QuantizerConfig, "decoder": DecoderConfig}
        kwargs = {}
        for key, value in data.items():
            if key in parts:
                kwargs[key] = _build(parts[key], _without_retired(key, value))
            else:
                kwargs[key] = value
        return _build(cls, kwargs)


# Fields that earlier versions stored in every checkpoint, with the one value this version
# builds (None: any value; the field only mattered with another setting). A checkpoint holding
# another value describes a network this version cannot build. (Checkpoints from before these
# fields existed fail on their tensors instead: strict loading names what is missing.)
RETIRED_FIELDS: dict[tuple[str, str], Any] = {
    ("encoder", "features"): "logmag",
    ("quantizer", "distance"): "euclidean",
    ("quantizer", "update"): "ema",
    ("quantizer", "codebook_dim"): None,
    ("quantizer", "collapse_codes"): None,
    ("decoder", "phase"): "harmonic",
    ("decoder", "phase_group"): None,
    ("decoder", "phase_align"): False,
    ("decoder", "linear_skip"): True,
}


def _without_retired(part: str, values: dict[str, Any]) -> dict[str, Any]:
    values = dict(values)
    for (retired_part, name), built in RETIRED_FIELDS.items():
        if retired_part == part and name in values:
            value = values.pop(name)
            if built is not None and value != built:
                raise ValueError(
                    f"{part}.{name} = {value!r}: this version builds only {built!r} "
                    f"(the model was made by an earlier version of vqcodec)"
                )
    return values


def _build(cls: type, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)
