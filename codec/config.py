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
    # The encoder sees an STFT at `stft_hop` samples per frame, so every convolution runs at frame
    # rate, never at the waveform rate. "logmag": log-magnitudes, shifted and scaled to about
    # [-2, 2]. "compressed": the complex STFT with |X|^0.3 magnitudes, real and imaginary parts
    # (the first shipped model). A small autoencoder from log-magnitudes reached a log-spectral L1
    # of 0.61 in 400 steps where the same from the compressed complex STFT stayed at 1.0-1.6: the
    # magnitude had to be untangled from a pseudo-random phase first. "logmag+phase": both, the
    # log-magnitudes and the compressed complex values side by side, so the codes can carry
    # phase (with "logmag" alone they cannot: the decoder has to invent every frame's phase).
    # "logmag+f0": log-magnitudes plus the pitch tracker's voicing and log f0 per frame
    # (codec.pitch.estimate_f0), so the codes can carry f0 more finely than 25 Hz bins show it.
    features: str = "logmag"
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
    num_levels: int = 12
    codebook_size: int = 1024
    dim: int = 128
    # "euclidean": each level picks the entry nearest in L2 distance to its residual, in the full
    # latent space, so every level removes part of the residual (the VQ-VAE paper; EnCodec).
    # "cosine": entries are compared by cosine in a learned `codebook_dim` projection (DAC's
    # factorized codes). The shipped cosine model showed why that is not the default: a per-clip
    # offset dominated the 8-d projections, so 12 levels left as much error as 1.
    distance: str = "euclidean"
    # Only for "cosine": size of the projected space the codes are looked up in.
    codebook_dim: int = 8
    commitment_weight: float = 0.25
    # "loss": codebooks learn from the codebook loss by gradient (van den Oord et al. 2017).
    # "ema": they follow exponential moving averages of their assigned vectors (the paper's
    # appendix; EnCodec).
    update: str = "ema"
    ema_decay: float = 0.99
    # Entries whose EMA count falls below this fraction of the average entry's are restarted
    # from random vectors of the batch.
    dead_code_threshold: float = 0.1
    # Only for "euclidean": a restarted entry is put this fraction of the way from the entry a
    # random batch vector belongs to towards that vector, so it splits that entry's cell (1: on
    # the vector itself, which in a high-dimensional space wins almost nothing).
    split_step: float = 0.1
    # Only for "cosine": a training batch whose vectors use fewer distinct entries than this at
    # one level means the level's projection has collapsed onto one direction; it is then
    # centred and re-initialised. 0 switches the check off.
    collapse_codes: int = 8
    # Probability that a training item is quantized with a random number of levels.
    level_dropout: float = 0.5

    # Fields that steer training alone: configs differing only in these hold the same tensors and
    # quantize alike, so a warm start carries the codebooks over.
    TRAINING_FIELDS: ClassVar[tuple[str, ...]] = (
        "commitment_weight", "ema_decay", "dead_code_threshold", "split_step", "collapse_codes", "level_dropout",
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
    # A linear path from the latents to the head's log-magnitudes, beside the WaveNet stack: the
    # linear part of the mapping (the spectral envelope) is learnt in a few hundred steps, and the
    # stack learns what is left. Trained without it, the stack took thousands of steps to get as
    # far (log-spectral L1 0.70 vs 0.96 after 400 steps from scratch).
    linear_skip: bool = True
    # How the head makes phase (see codec.decoder): "direct" (each frame's phase predicted
    # outright, as Vocos does; the shipped model), "integrated" (phase advances summed over time
    # in groups of bins) or "harmonic" (voiced frames get the phase of a pulse train at a
    # predicted f0). The README's "What limits it now" has what each measured.
    phase: str = "direct"
    # Only for "integrated": adjacent bins that share one summed advance.
    phase_group: int = 4
    # Only for "harmonic": the range of f0 the pitch head can predict.
    pitch_min_hz: float = 60.0
    pitch_max_hz: float = 400.0
    # Only for "harmonic": a 1x1 layer adds a learnt complex offset to the fundamental's running
    # phase, e^{i theta} + (a + ib), before the harmonics are built from it. The running phase starts
    # wherever the decoding window starts, so on its own it lines the pulses up with the input's
    # only by chance (SI-SDR at the chance level, about -20 dB); with encoder features that carry
    # phase ("logmag+phase") the offset can say where the input's pulses are. Starts at zero.
    phase_align: bool = False


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
        if self.encoder.features not in ("logmag", "compressed", "logmag+phase", "logmag+f0"):
            raise ValueError(f"unknown encoder features {self.encoder.features!r}")
        if self.decoder.phase not in ("direct", "integrated", "harmonic"):
            raise ValueError(f"unknown decoder phase {self.decoder.phase!r}")
        if self.decoder.phase_align and self.decoder.phase != "harmonic":
            raise ValueError("decoder.phase_align needs decoder.phase 'harmonic'")
        if self.decoder.phase_group < 1:
            raise ValueError("decoder.phase_group must be at least 1")
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
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        parts = {"encoder": EncoderConfig, "quantizer": QuantizerConfig, "decoder": DecoderConfig}
        data = dict(data)
        # Checkpoints written before these fields existed were built the old way.
        for part, key, old in (("quantizer", "distance", "cosine"), ("encoder", "features", "compressed"),
                               ("decoder", "linear_skip", False), ("decoder", "phase", "direct"),
                               ("decoder", "phase_group", 1)):
            if part in data and key not in data[part]:
                data[part] = {**data[part], key: old}
        kwargs = {}
        for key, value in data.items():
            if key in parts:
                kwargs[key] = _build(parts[key], value)
            else:
                kwargs[key] = value
        return _build(cls, kwargs)


def _build(cls: type, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


def tiny_config() -> CodecConfig:
    """A few-thousand-parameter model for tests: same structure, small widths, and the harmonic
    head (the one with the most moving parts: pitch, a running phase carried across windows)."""
    return CodecConfig(
        encoder=EncoderConfig(channels=32, dilations=(1, 3), latent_dim=16),
        quantizer=QuantizerConfig(num_levels=4, codebook_size=64, dim=16),
        decoder=DecoderConfig(channels=32, dilations=(1, 2, 4), skip_channels=32, phase="harmonic"),
        name="vqcodec-tiny",
    )
