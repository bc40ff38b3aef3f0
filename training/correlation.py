"""Where a codec's waveform match comes from: its output's correlation with the input, split by
frequency band.

    python -m training.correlation --manifest data/corpus/manifest.jsonl --split val --kind speech \\
        [--checkpoint runs/codec/last.safetensors] [--bitrate 1.5] [--max-files 60] [--contains klettres]

SI-SDR depends on the output only through its correlation coefficient rho with the input
(SI-SDR = 10 log10(rho^2 / (1 - rho^2))). Parseval splits rho exactly into a sum over frequency
bins of Re(X_k conj(Y_k)) / (|x| |y|), so summing the bins of each band says which frequencies
carry the match: a vocoder that keeps the fundamental in phase with the input shows it in the
band of the fundamental, one whose phase runs free shows about zero everywhere.

Prints, for our codec and Codec2 3200 (when c2enc is installed), the mean SI-SDR and the mean
per-band share of rho over the files, each output aligned by its system's delay as in
training.evaluate.

A pulse train stays in phase with the input over a voiced stretch of T seconds only if its f0 is
off by well under 1 / (4 T) Hz (0.1% of 250 Hz for a 1 s vowel), so for a harmonic decoder head
it also prints how far the decoder's f0 is from the tracker's (`codec.pitch.estimate_f0` of the
input) on frames both call voiced: the median of |log(f0_decoded / f0_tracked)| and the shares
within 0.3%, 1% and 3%, with --pitch-levels levels and unquantized. And what a sent pitch
would be worth: SI-SDR and PESQ at --bitrate when the harmonic head takes the tracker's f0 of
the input on the frames the tracker calls voiced (the decoder as trained, not retrained for it),
exact and quantized to steps of 0.5%, 1% and 2% in log f0 with one value per code frame (20 ms;
the frames between interpolated), as a pitch side stream would send it.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from codec import Codec, pitchcode
from codec.pitch import estimate_f0
from training.baselines import Codec2, OurCodec, System, missing_tools
from training.data import read_manifest
from training.evaluate import load_audio
from training.metrics import MAX_LAG_S, SAMPLE_RATE, pesq_wb, shift, si_sdr, system_delay

EDGES_HZ = (0, 100, 200, 400, 800, 1600, 3200, 8000)


def band_correlation(reference: np.ndarray, output: np.ndarray, edges_hz=EDGES_HZ,
                     sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The correlation coefficient of two equal-length signals, split into the bands between
    `edges_hz` (the last edge is included); the parts sum to sum(x * y) / (|x| |y|)."""
    n = len(reference)
    x, y = np.fft.rfft(reference.astype(np.float64)), np.fft.rfft(output.astype(np.float64))
    weight = np.full(len(x), 2.0)  # each bin stands for itself and its mirror image...
    weight[0] = 1.0  # ...except DC and, for even n, the Nyquist bin
    if n % 2 == 0:
        weight[-1] = 1.0
    norm = np.linalg.norm(reference.astype(np.float64)) * np.linalg.norm(output.astype(np.float64))
    cross = weight * np.real(x * np.conj(y)) / n / max(norm, 1e-20)
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    bands = [(freqs >= lo) & (freqs < hi) for lo, hi in zip(edges_hz[:-1], edges_hz[1:])]
    bands[-1] |= freqs == edges_hz[-1]
    return np.array([cross[band].sum() for band in bands])


def _input_track(model, wav: torch.Tensor):
    """The tracker's f0 and voicing of a padded input [1, 1, T] at the decoder's frames."""
    head, config = model.decoder.head, model.config.decoder
    return estimate_f0(wav[:, 0].double(), head.n_fft, head.hop, config.pitch_min_hz / model.sample_rate,
                       config.pitch_max_hz / model.sample_rate)


def _decode_with_pitch(codec: Codec, wav: torch.Tensor, levels: int, log_f0: torch.Tensor, mask: torch.Tensor,
                       length: int) -> np.ndarray:
    """Our decoded audio [length] of a padded input [1, 1, T], the head taking `log_f0` on `mask`."""
    model = codec.model
    with torch.inference_mode():
        latents = model.quantizer.decode(model.encode(wav, levels))
        frames = latents.shape[-1] * model.config.decoder.upsample
        out = model.decoder.head_output(latents, pitch=(log_f0[:, :frames], mask[:, :frames]))
        return model.decoder.head.synthesize(out.spectrum)[0, 0, :length].float().numpy()


def _summary(audio: list[np.ndarray], outputs: list[np.ndarray]) -> str:
    sdr = np.mean([si_sdr(x, y) for x, y in zip(audio, outputs)])
    scores = [s for s in (pesq_wb(x, y) for x, y in zip(audio, outputs)) if s is not None]
    return f"SI-SDR {sdr:.2f} dB, PESQ-WB {np.mean(scores):.3f} ({len(scores)} files)"


def pitch_errors(codec: Codec, audio: np.ndarray, levels: int | None) -> np.ndarray:
    """|log(f0 decoded / f0 tracked)| on the frames where the decoder's harmonic head and the
    tracker both find voicing; `levels` None: the unquantized latents."""
    model = codec.model
    head = model.decoder.head
    if head.pitch is None:
        raise ValueError("the decoder has no pitch head (not a harmonic one)")
    wav = model._pad(torch.from_numpy(audio)[None, None])
    with torch.inference_mode():
        latents = model.encoder(wav) if levels is None else model.quantizer.decode(model.encode(wav, levels))
        out = model.decoder.head_output(latents)
    track = _input_track(model, wav)
    frames = min(out.log_f0.shape[-1], track.f0.shape[-1])
    both = (out.voicing[0, :frames] > 0) & track.voiced[0, :frames]
    ratio = out.log_f0[0, :frames].double() - track.f0[0, :frames].log()
    return ratio[both].abs().numpy()


def quantized_track(log_f0: torch.Tensor, step: float | None, upsample: int) -> torch.Tensor:
    """log f0 [B, M] at the decoder's frame rate, kept at one value per code frame (every
    `upsample`-th frame) rounded to multiples of `step`, the frames between interpolated
    linearly (the last held); step None: unchanged."""
    if step is None:
        return log_f0
    kept = torch.round(log_f0[:, ::upsample] / step) * step
    following = torch.cat([kept[:, 1:], kept[:, -1:]], dim=1)
    weight = (torch.arange(log_f0.shape[1]) % upsample / upsample).to(log_f0.dtype)
    index = torch.arange(log_f0.shape[1]) // upsample
    return kept[:, index] * (1 - weight) + following[:, index] * weight


def with_input_pitch(codec: Codec, audio: np.ndarray, levels: int, step: float | None) -> np.ndarray:
    """Our decoded audio [T] when the harmonic head takes the input's tracked f0 (quantized by
    `quantized_track`) on the frames the tracker calls voiced."""
    model = codec.model
    wav = model._pad(torch.from_numpy(audio)[None, None])
    track = _input_track(model, wav)
    log_f0 = quantized_track(track.f0.log(), step, model.config.decoder.upsample)
    return _decode_with_pitch(codec, wav, levels, log_f0, track.voiced, len(audio))


def with_pitch_stream(codec: Codec, audio: np.ndarray, levels: int) -> tuple[np.ndarray, bytes]:
    """Our decoded audio [T] when the harmonic head takes the f0 sent in a `codec.pitchcode`
    stream, and that stream's bytes (coded and decoded back)."""
    model = codec.model
    config = model.config
    wav = model._pad(torch.from_numpy(audio)[None, None])
    track = pitchcode.analyse(wav[0, 0], config.sample_rate, config.hop_length, config.decoder.n_fft,
                              config.decoder.upsample)
    stream = pitchcode.encode_track(track)
    track = pitchcode.decode_track(stream, len(track.voiced))
    log_f0, mask = pitchcode.decoder_pitch(track, config.sample_rate, config.decoder.upsample)
    return _decode_with_pitch(codec, wav, levels, log_f0, mask, len(audio)), stream


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--kind", default="speech")
    parser.add_argument("--checkpoint", help="codec checkpoint; default: the bundled model")
    parser.add_argument("--bitrate", type=float, default=1.5)
    parser.add_argument("--max-files", type=int, default=60)
    parser.add_argument("--contains", default="", help="only files whose path contains this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pitch-levels", type=lambda v: [int(x) for x in v.split(",")], default=[3, 12],
                        help="levels at which to measure the decoder's f0 error (harmonic heads)")
    args = parser.parse_args(argv)

    files = [c for c in read_manifest(args.manifest, args.split, (args.kind,)) if args.contains in c.path]
    random.Random(args.seed).shuffle(files)
    files = files[: args.max_files]
    if not files:
        raise SystemExit("no files match")
    audio = [load_audio(f.path) for f in files]
    codec = Codec.load(args.checkpoint)
    systems: list[System] = [OurCodec(codec, args.bitrate)]
    if not missing_tools()["codec2"]:
        systems.append(Codec2(3200))
    edges = EDGES_HZ
    print(f"{len(files)} files; bands (Hz): " + " ".join(f"{lo}-{hi}" for lo, hi in zip(edges[:-1], edges[1:])))
    for system in systems:
        outputs = [system.run(x).audio for x in audio]
        delay = 0 if isinstance(system, OurCodec) else system_delay(list(zip(audio[:20], outputs[:20])),
                                                                     int(MAX_LAG_S * SAMPLE_RATE))
        aligned = [shift(y, delay, len(x)) for x, y in zip(audio, outputs)]
        sdr = np.mean([si_sdr(x, y) for x, y in zip(audio, aligned)])
        per_file = np.array([band_correlation(x, y) for x, y in zip(audio, aligned)])
        bands, magnitude = per_file.mean(axis=0), np.abs(per_file.sum(axis=1)).mean()
        scores = [s for s in (pesq_wb(x, y) for x, y in zip(audio, aligned)) if s is not None]
        print(f"{system.family} {system.setting}: SI-SDR {sdr:.2f} dB, PESQ-WB {np.mean(scores):.3f}; "
              f"mean |rho| {magnitude:.3f}; mean rho by band "
              + " ".join(f"{b:+.3f}" for b in bands) + f" (sum {bands.sum():+.3f})")
    if codec.model.decoder.head.pitch is not None:
        for levels in [*args.pitch_levels, None]:
            errors = np.concatenate([pitch_errors(codec, x, levels) for x in audio])
            name = f"{levels} levels" if levels else "unquantized"
            print(f"decoder f0 vs tracker, {name}: {len(errors)} voiced frames, median |log ratio| "
                  f"{np.median(errors):.4f}; within 0.3% {np.mean(errors < 0.003):.2f}, 1% {np.mean(errors < 0.01):.2f}, "
                  f"3% {np.mean(errors < 0.03):.2f}")
        levels = codec.num_levels(args.bitrate)
        for step in (None, 0.005, 0.01, 0.02):
            outputs = [with_input_pitch(codec, x, levels, step) for x in audio]
            name = "exact" if step is None else f"in {step:.1%} steps, one per code frame"
            print(f"ours {args.bitrate:g} kbps with the input's f0 ({name}): {_summary(audio, outputs)}")
        outputs, bits = [], 0
        for x in audio:
            y, stream = with_pitch_stream(codec, x, levels)
            outputs.append(y)
            bits += 8 * len(stream)
        seconds = sum(len(x) for x in audio) / SAMPLE_RATE
        print(f"ours {args.bitrate:g} kbps with the pitch stream (codec.pitchcode, {bits / seconds:.0f} bit/s): "
              f"{_summary(audio, outputs)}")


if __name__ == "__main__":
    main()
