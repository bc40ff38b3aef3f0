"""Encoding and decoding long signals in fixed windows, so that memory stays bounded.

Each window is processed with extra context on both sides at least as wide as the network's
receptive field, and only its centre is kept; since no layer normalises over time, the result
equals whole-signal processing up to floating-point rounding, with no seams at the boundaries.
A decoder head that sums phase over time gets its sum carried from window to window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from codec.audio import AudioSource, check_finite
from codec.interrupt import checkpoint
from codec.model import CodecModel

Progress = Callable[[int], None]  # called with the number of frames just finished


def encode_source(
    model: CodecModel,
    source: AudioSource,
    num_levels: int,
    window_frames: int = 500,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Codes [K, N] for a whole source, N = ceil(num_samples / hop_length)."""
    hop = model.hop_length
    total = model.num_frames(source.num_samples)
    context = model.encoder_context
    device = next(model.parameters()).device
    pieces = []
    for first in range(0, total, window_frames):
        checkpoint()
        last = min(first + window_frames, total)
        start, stop = first * hop, last * hop
        lo = max(start - context, 0)
        hi = min(stop + context, total * hop)
        wav = source.read(lo, hi)
        check_finite(wav)
        codes = model.encode(wav[None].to(device), num_levels)[0]
        offset = (start - lo) // hop
        pieces.append(codes[:, offset : offset + last - first].cpu().clone())
        if progress:
            progress(last - first)
    if not pieces:
        return torch.zeros(num_levels, 0, dtype=torch.long)
    return torch.cat(pieces, dim=1)


def decode_windows(
    model: CodecModel,
    codes: torch.Tensor,
    num_samples: int,
    window_frames: int = 500,
    progress: Progress | None = None,
    pitch: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield consecutive waveform pieces [1, L] of the decoding of codes [K, N], num_samples in all.
    `pitch` (log f0, mask), each [1, N * upsample]: a sent f0
    (`codec.pitchcode.decoder_pitch`), sliced to each window.

    The head sums phase over time and would start its sum afresh in every window; each window
    starts it instead at the value the previous window reached at the first frame it keeps,
    so the sum continues as in whole-signal decoding."""
    hop = model.hop_length
    total = codes.shape[-1]
    context = model.decoder_context
    upsample = model.config.decoder.upsample
    device = next(model.parameters()).device
    emitted = 0
    carried = None  # the phase track's value due at the next window's first kept frame
    for first in range(0, total, window_frames):
        checkpoint()
        last = min(first + window_frames, total)
        lo, hi = max(first - context, 0), min(last + context, total)
        with torch.inference_mode():
            origin = None if carried is None else (carried, (first - lo) * upsample)
            given = None if pitch is None else tuple(p[:, lo * upsample : hi * upsample].to(device) for p in pitch)
            out = model.decoder.head_output(model.quantizer.decode(codes[None, :, lo:hi].to(device)), origin, given)
            if last < total:
                carried = out.phase_track[..., (last - lo) * upsample]
            wav = model.decoder.head.synthesize(out.spectrum)[0]
        piece = wav[:, (first - lo) * hop : (last - lo) * hop]
        piece = piece[:, : max(num_samples - emitted, 0)]
        emitted += piece.shape[-1]
        if progress:
            progress(last - first)
        yield piece.float().cpu().clone()
