"""Where the codec's quality goes: our decoder's output scored beside variants that take one part
from the input instead, all synthesised by the decoder's own inverse-STFT head.

    python -m training.diagnose --manifest data/corpus/manifest.jsonl --split val --kind speech \\
        [--checkpoint runs/codec/best.safetensors] [--levels 2,5,12] [--max-files 24] [--seconds 6]

Variants, per number of levels:
- decoded: the codec's output.
- decoded magnitude + input phase: the phase is exact, so what is lost is magnitude error.
- input magnitude + decoded phase: the magnitude is exact (before the overlap-add), so what is
  lost is the decoder's phase.
- decoded magnitude + input phase, turned by a random constant per band of B bins: what the
  phase differences across bands are worth (B = 1, 4, 16); within a band they stay exact.
- decoded magnitude + pulse-train phase at the input's f0: voiced frames (by
  codec.pitch.estimate_f0 of the input) take codec.pitch.harmonic_phase at the tracked f0,
  unvoiced ones keep the decoded phase: what a harmonic head with an exact pitch could give.
and once:
- unquantized: the encoder's latents straight into the decoder, the autoencoder's own ceiling
  (what more levels or better codebooks could win at most).
- input: the input's own STFT through the head (checks the synthesis; PESQ ~4.6).

Prints mean PESQ-WB and STOI per variant over files that PESQ can score (at least 0.01 RMS).
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch
import torch.nn.functional as F

from codec import Codec
from codec.decoder import analysis_stft
from codec.pitch import estimate_f0, harmonic_phase
from training.data import read_manifest
from training.evaluate import load_audio
from training.metrics import pesq_wb, stoi


BANDS = (1, 4, 16)


def band_offsets(bins: int, band: int, generator: torch.Generator) -> torch.Tensor:
    """A random phase [1, bins, 1], constant over each band of `band` adjacent bins."""
    offsets = 2 * torch.pi * torch.rand(1, -(-bins // band), 1, generator=generator)
    return offsets.repeat_interleave(band, dim=1)[:, :bins]


def variants(codec: Codec, audio: np.ndarray, levels: list[int]) -> dict[str, np.ndarray]:
    model = codec.model
    generator = torch.Generator().manual_seed(len(audio))
    head = model.decoder.head
    wav = torch.from_numpy(audio)[None, None]
    out = {}
    with torch.inference_mode():
        latents = model.encoder(model._pad(wav))
        frames = latents.shape[-1] * model.config.decoder.upsample
        reference = analysis_stft(F.pad(wav, (0, frames * head.hop - wav.shape[-1])), head.n_fft, head.hop)
        spectra = {"unquantized": model.decoder.spectrum(latents), "input": reference}
        pulse_phase, voiced = input_pulse_phase(codec, wav, frames)
        for k in levels:
            spectrum = model.decoder.spectrum(model.quantizer(latents, k).quantized)
            spectra[f"{k} levels: decoded"] = spectrum
            spectra[f"{k} levels: decoded magnitude + input phase"] = torch.polar(spectrum.abs(), reference.angle())
            spectra[f"{k} levels: input magnitude + decoded phase"] = torch.polar(reference.abs(), spectrum.angle())
            for band in BANDS:
                spectra[f"{k} levels: decoded magnitude + input phase, random offset per {band} bins"] = torch.polar(
                    spectrum.abs(), reference.angle() + band_offsets(reference.shape[1], band, generator))
            spectra[f"{k} levels: decoded magnitude + pulse-train phase at the input's f0"] = torch.polar(
                spectrum.abs(), torch.where(voiced, pulse_phase, spectrum.angle()))
        for name, spectrum in spectra.items():
            out[name] = head.synthesize(spectrum)[0, 0, : len(audio)].numpy()
    return out


def input_pulse_phase(codec: Codec, wav: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The input's tracked pitch as a pulse-train phase [1, F, M] for M = `frames` head frames,
    and which frames are voiced [1, 1, M]; f0 is held through unvoiced frames so the running
    phase continues."""
    head, decoder = codec.model.decoder.head, codec.model.config.decoder
    rate = codec.sample_rate
    padded = F.pad(wav, (0, frames * head.hop - wav.shape[-1]))[:, 0].double()
    track = estimate_f0(padded, head.n_fft, head.hop, decoder.pitch_min_hz / rate, decoder.pitch_max_hz / rate)
    f0 = track.f0.clone()
    for m in range(1, frames):
        if not track.voiced[0, m]:
            f0[0, m] = f0[0, m - 1]
    theta = torch.remainder((2 * torch.pi * head.hop * f0).cumsum(dim=-1), 2 * torch.pi)
    return harmonic_phase(f0, theta, head.n_fft).float(), track.voiced[:, None, :]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--kind", action="append", help="kinds of audio to use (repeatable; default: all)")
    parser.add_argument("--checkpoint", help="codec checkpoint (default: the bundled model)")
    parser.add_argument("--levels", default="2,5,12", help="comma-separated numbers of levels")
    parser.add_argument("--max-files", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=6.0, help="score at most this much of each file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    codec = Codec.load(args.checkpoint)
    levels = [int(k) for k in args.levels.split(",")]
    clips = read_manifest(args.manifest, args.split, tuple(args.kind) if args.kind else None)
    random.Random(args.seed).shuffle(clips)
    scores: dict[str, list[tuple[float, float]]] = {}
    used = 0
    for clip in clips:
        if used >= args.max_files:
            break
        audio = load_audio(clip.path)[: int(args.seconds * codec.sample_rate)]
        if np.sqrt(np.mean(audio.astype(np.float64) ** 2)) < 0.01 or pesq_wb(audio, audio) is None:
            continue
        used += 1
        for name, output in variants(codec, audio, levels).items():
            scores.setdefault(name, []).append((pesq_wb(audio, output), stoi(audio, output)))
    print(f"{codec.model_id}, {used} files of {args.split} ({', '.join(args.kind or ['all kinds'])}), "
          f"at most {args.seconds:g} s each")
    print("| variant | PESQ-WB | STOI |\n|---|---|---|")
    for name, values in scores.items():
        pesq_mean, stoi_mean = np.nanmean(np.array(values, dtype=float), axis=0)
        print(f"| {name} | {pesq_mean:.3f} | {stoi_mean:.3f} |")


if __name__ == "__main__":
    main()
