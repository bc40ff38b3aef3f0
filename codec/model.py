"""The VQ-VAE codec assembled from its parts: encoder, residual quantizer and WaveNet decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.config import CodecConfig
from codec.decoder import Decoder
from codec.encoder import Encoder
from codec.quantizer import ResidualVectorQuantizer


@dataclass
class CodecOutput:
    audio: torch.Tensor  # [B, 1, T] reconstruction
    codes: torch.Tensor  # [B, K, N]
    commitment_loss: torch.Tensor  # scalar
    # The decoder head's complex spectrum [B, F, M] before synthesis, on the scale of
    # codec.decoder.analysis_stft of the (padded) input: phase and magnitude losses compare them.
    spectrum: torch.Tensor
    # The head's pitch, [B, M] each: log f0 in cycles per sample and voicing logits.
    log_f0: torch.Tensor
    voicing: torch.Tensor


class CodecModel(nn.Module):
    def __init__(
        self,
        encoder: Encoder,
        quantizer: ResidualVectorQuantizer,
        decoder: Decoder,
        config: CodecConfig,
    ):
        super().__init__()
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder
        self.config = config

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def num_frames(self, num_samples: int) -> int:
        return -(-num_samples // self.hop_length)

    def _pad(self, wav: torch.Tensor) -> torch.Tensor:
        return F.pad(wav, (0, self.num_frames(wav.shape[-1]) * self.hop_length - wav.shape[-1]))

    def forward(self, wav: torch.Tensor, num_levels: int | None = None) -> CodecOutput:
        """Reconstruct wav [B, 1, T]; training draws a random number of levels per item."""
        length = wav.shape[-1]
        q = self.quantizer(self.encoder(self._pad(wav)), num_levels)
        head = self.decoder.head_output(q.quantized)
        audio = self.decoder.head.synthesize(head.spectrum)[..., :length]
        return CodecOutput(audio, q.codes, q.commitment_loss, head.spectrum, head.log_f0, head.voicing)

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, num_levels: int | None = None) -> torch.Tensor:
        """wav [B, 1, T] at the model's sample rate -> codes [B, K, ceil(T / hop_length)]."""
        latents = self.encoder(self._pad(wav))
        return self.quantizer(latents, num_levels or self.config.quantizer.num_levels).codes

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, N] (any K up to the model's levels) -> wav [B, 1, N * hop_length]."""
        return self.decoder(self.quantizer.decode(codes))

    @property
    def encoder_context(self) -> int:
        """Samples of context either side that make windowed encoding equal whole-file encoding."""
        return _round_up(self.encoder.receptive_field, self.hop_length)

    @property
    def decoder_context(self) -> int:
        """Frames of context either side that make windowed decoding equal whole-file decoding."""
        return -(-self.decoder.receptive_field(self.hop_length) // self.hop_length)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def build_model(config: CodecConfig) -> CodecModel:
    """The default assembly of a codec from its config."""
    return CodecModel(
        encoder=Encoder(config.encoder, config.hop_length),
        quantizer=ResidualVectorQuantizer(config.quantizer),
        decoder=Decoder(config.decoder, config.quantizer.dim, config.hop_length, config.sample_rate),
        config=config,
    )
