"""A neural audio codec: a VQ-VAE with a WaveNet decoder that turns 16 kHz audio into discrete
tokens (50 frames/s, 0.5 to 6 kbps) and back.

    from codec import Codec
    codec = Codec.load()
    encoded = codec.encode(wav, sample_rate=sr, bitrate=3.0)
    audio = codec.decode(encoded)
"""

from codec.api import Codec, EncodedAudio
from codec.config import CodecConfig, DecoderConfig, EncoderConfig, QuantizerConfig
from codec.errors import CodecError, CorruptStreamError, InvalidAudioError
from codec.interrupt import Interrupted, interruptible
from codec.model import CodecModel, build_model
from codec.pitchcode import PitchTrack

__all__ = [
    "Codec",
    "CodecConfig",
    "CodecError",
    "CodecModel",
    "CorruptStreamError",
    "DecoderConfig",
    "EncodedAudio",
    "EncoderConfig",
    "Interrupted",
    "InvalidAudioError",
    "PitchTrack",
    "QuantizerConfig",
    "build_model",
    "interruptible",
]
