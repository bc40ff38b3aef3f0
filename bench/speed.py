"""Speed and memory benchmark of the codec on CPU, side by side with EnCodec's 24 kHz architecture.

    python -m bench.speed --threads 2 [--checkpoint PATH] [--hour] [--hour-entropy [--prior PATH]]

Prints encode and decode real-time factors (seconds of audio per second of compute) for a 10 s
clip at batch 1 and batch 16, the same for EnCodec (random weights: only the architecture is
timed, `pip install encodec`), their ratio, and with --hour the peak RSS of encoding and decoding
a one-hour file through the CLI path in a fresh process. Run it on an idle machine. The prior's
speeds and sizes: bench.prior.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_ours(codec, seconds: float, batch: int, repeats: int) -> tuple[float, float]:
    model = codec.model
    wav = torch.randn(batch, 1, int(seconds * codec.sample_rate)) * 0.1
    codes = model.encode(wav)
    enc = _best_time(lambda: model.encode(wav), repeats)
    dec = _best_time(lambda: model.decode(codes), repeats)
    return seconds * batch / enc, seconds * batch / dec


def bench_encodec(seconds: float, batch: int, repeats: int) -> tuple[float, float] | None:
    try:
        from encodec import EncodecModel
    except ImportError:
        return None
    model = EncodecModel.encodec_model_24khz(pretrained=False).eval()
    model.set_target_bandwidth(6.0)
    wav = torch.randn(batch, 1, int(seconds * 24000)) * 0.1
    with torch.inference_mode():
        frames = model.encode(wav)
        enc = _best_time(lambda: model.encode(wav), repeats)
        dec = _best_time(lambda: model.decode(frames), repeats)
    return seconds * batch / enc, seconds * batch / dec


def _peak_rss_child(args: list[str], threads: int) -> tuple[float, float]:
    """Run `python -m codec ARGS` in a fresh process; return (peak RSS in MB, wall seconds)."""
    # VmHWM is the peak RSS of this process image only: ru_maxrss would carry over the parent's
    # peak across fork and exec.
    code = (
        "import runpy, sys, time; sys.argv = ['codec'] + %r; t = time.time()\n"
        "try:\n    runpy.run_module('codec', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(int(hwm) / 1024, time.time() - t)" % (args,)
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    rss, wall = out.stdout.split()[-2:]
    return float(rss), float(wall)


def bench_hour(checkpoint: str | None, threads: int, entropy: list[str]) -> None:
    """`entropy`: extra encode options, e.g. ["--entropy", "--prior", PATH] ([]: packed)."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "hour.wav"
        rate = 16000
        with sf.SoundFile(wav, "w", rate, 1, subtype="PCM_16") as f:
            rng = np.random.default_rng(0)
            for _ in range(60):  # one minute at a time: the benchmark itself stays small
                f.write((rng.standard_normal(rate * 60) * 0.05).astype(np.float32))
        extra = ["--checkpoint", checkpoint] if checkpoint else []
        rss_e, wall_e = _peak_rss_child(
            ["encode", str(wav), str(Path(tmp) / "hour.vqac"), "-q", *extra, *entropy], threads
        )
        prior = entropy[entropy.index("--prior") : entropy.index("--prior") + 2] if "--prior" in entropy else []
        rss_d, wall_d = _peak_rss_child(
            ["decode", str(Path(tmp) / "hour.vqac"), str(Path(tmp) / "out.wav"), "-q", *extra, *prior], threads
        )
        print(
            f"1-hour file{' (entropy-coded)' if entropy else ''}: "
            f"encode peak RSS {rss_e:.0f} MB ({3600 / wall_e:.0f}x real time), "
            f"decode peak RSS {rss_d:.0f} MB ({3600 / wall_d:.0f}x real time)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", default=None, help="default: the bundled model, else random weights")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hour", action="store_true", help="also measure peak memory on a 1-hour file")
    parser.add_argument("--hour-entropy", action="store_true", help="the same with --entropy (the bundled prior)")
    parser.add_argument("--prior", help="with --hour-entropy: this prior checkpoint instead of the bundled one")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from codec.api import BUNDLED_CHECKPOINT, Codec
    from codec.config import CodecConfig
    from codec.model import build_model

    if args.checkpoint or BUNDLED_CHECKPOINT.exists():
        codec = Codec.load(args.checkpoint)
        which = codec.model_id
    else:
        codec = Codec(build_model(CodecConfig()), "random")
        which = "default config, random weights"
    params = sum(p.numel() for p in codec.model.parameters()) / 1e6
    print(f"torch {torch.__version__}, {args.threads} threads; ours: {which} ({params:.2f}M parameters)")
    print(f"{'model':<22}{'batch':>6}{'encode xRT':>12}{'decode xRT':>12}")
    for batch in (1, 16):
        ours = bench_ours(codec, args.seconds, batch, args.repeats)
        print(f"{'ours (16 kHz)':<22}{batch:>6}{ours[0]:>12.1f}{ours[1]:>12.1f}")
        theirs = bench_encodec(args.seconds, batch, args.repeats)
        if theirs is None:
            print("encodec not installed: pip install encodec")
            continue
        print(f"{'EnCodec 24 kHz arch':<22}{batch:>6}{theirs[0]:>12.1f}{theirs[1]:>12.1f}")
        print(f"{'ratio ours/EnCodec':<22}{batch:>6}{ours[0] / theirs[0]:>12.1f}{ours[1] / theirs[1]:>12.1f}")
    if args.hour or args.hour_entropy:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = args.checkpoint
            if checkpoint is None and not BUNDLED_CHECKPOINT.exists():
                checkpoint = str(Path(tmp) / "random.safetensors")
                codec.save(checkpoint)
            if args.hour:
                bench_hour(checkpoint, args.threads, [])
            if args.hour_entropy:
                bench_hour(checkpoint, args.threads, ["--entropy"] + (["--prior", args.prior] if args.prior else []))
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
