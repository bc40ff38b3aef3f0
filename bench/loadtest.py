"""Load benchmark: the server over loopback at a fixed arrival rate, with batching on and off.

    python -m bench.loadtest --rates 2,4,8 --duration 20          # bundled model
    python -m bench.loadtest --random-weights --threads 2          # before a model is bundled
    python -m bench.loadtest --url http://host:8000 --rates 4      # a server already running

An open model: request i is sent at i / rate whatever happened to the earlier ones, and its
latency counts from that moment, so a slow server shows up as latency instead of as a gentler
load (no coordinated omission). Prints throughput in seconds of audio per second and p50/p95/p99
latency per rate, for a server with batching and one without, and the HTTP overhead of one
request at a time over calling the codec in-process on the same clip.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.server_process import running_server

STREAM = "application/octet-stream"


@dataclass
class RunResult:
    rate: float
    sent: int
    ok: int
    rejected: int  # 503 queue full, 504 timeout, transport errors
    audio_per_second: float  # seconds of audio answered per second of wall time
    p50: float
    p95: float
    p99: float


def speech_like_clip(seconds: float, rate: int = 16000) -> bytes:
    """A speech-like WAV clip: a gliding harmonic tone with a syllable envelope and noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(140 * (1 + 0.2 * np.sin(2 * np.pi * 0.7 * t))) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    audio = 0.2 * voice + rng.normal(0, 0.02, t.shape)
    buffer = io.BytesIO()
    sf.write(buffer, (0.8 * audio / np.abs(audio).max()).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


async def open_loop(
    url: str, clip: bytes, clip_seconds: float, rate: float, duration: float, headers: dict
) -> RunResult:
    import httpx

    count = max(1, int(rate * duration))
    latencies: list[float] = []
    rejected = 0
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits, headers=headers) as client:
        start = time.perf_counter()

        async def one(index: int) -> None:
            nonlocal rejected
            scheduled = start + index / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                response = await client.post("/encode", content=clip, headers={"content-type": "audio/wav"})
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - scheduled)
                else:
                    rejected += 1
            except httpx.TransportError:
                rejected += 1

        await asyncio.gather(*(one(i) for i in range(count)))
        wall = time.perf_counter() - start
    q = np.quantile(latencies, [0.5, 0.95, 0.99]) if latencies else [float("nan")] * 3
    return RunResult(rate, count, len(latencies), rejected, len(latencies) * clip_seconds / wall, *map(float, q))


def _in_process_worker(connection, checkpoint: str | None, clip: bytes, stream: bytes, threads: int) -> None:
    """A separate process calling the codec directly: gets ("encode" | "decode", n), runs the
    call n times, sends back the n durations; None ends it."""
    import torch

    from codec import Codec
    from codec.audio import write_audio

    torch.set_num_threads(threads)
    codec = Codec.load(checkpoint)
    calls = {
        "encode": lambda: codec.encode_file(clip),
        "decode": lambda: write_audio(io.BytesIO(), codec.decode(codec.from_bytes(stream))[0], codec.sample_rate),
    }
    for call in calls.values():
        call()  # warm up
    connection.send("ready")
    while (request := connection.recv()) is not None:
        op, count = request
        durations = []
        for _ in range(count):
            start = time.perf_counter()
            calls[op]()
            durations.append(time.perf_counter() - start)
        connection.send(durations)


def overhead_latencies(
    url: str, checkpoint: str | None, clip: bytes, repeats: int, threads: int, headers: dict, block: int = 5
) -> dict[str, tuple[float, float]]:
    """{"encode" | "decode": (median in-process seconds, median seconds over HTTP)} for one clip.

    The in-process calls run in a process of their own that loads the codec and calls it, as a
    user's script would; this process only sends HTTP requests. The two take turns in blocks of
    `block` calls, so that whatever else slows the machine (frequency scaling, a neighbour) slows
    both alike, and each runs on an otherwise idle machine. In-process encoding reads the same
    file bytes and decoding writes the same WAV bytes."""
    import multiprocessing

    import httpx

    times: dict[str, tuple[list[float], list[float]]] = {"encode": ([], []), "decode": ([], [])}
    with httpx.Client(base_url=url, timeout=300, headers=headers) as client:
        stream = client.post("/encode", content=clip, headers={"content-type": "audio/wav", "accept": STREAM}).content
        remote = {
            "encode": lambda: client.post(
                "/encode", content=clip, headers={"content-type": "audio/wav"}
            ).raise_for_status(),
            "decode": lambda: client.post(
                "/decode", content=stream, headers={"content-type": STREAM}
            ).raise_for_status(),
        }
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        worker = context.Process(target=_in_process_worker, args=(child, checkpoint, clip, stream, threads))
        worker.start()
        try:
            if parent.recv() != "ready":
                raise RuntimeError("the in-process worker failed to start")
            for op in times:
                remote[op]()  # warm up the server path and the connection
            for _ in range(max(1, repeats // block)):
                for op, (local_times, remote_times) in times.items():
                    time.sleep(0.2)
                    parent.send((op, block))
                    local_times.extend(parent.recv())
                    time.sleep(0.2)
                    for _ in range(block):
                        start = time.perf_counter()
                        remote[op]()
                        remote_times.append(time.perf_counter() - start)
        finally:
            parent.send(None)
            worker.join(60)
    return {op: (statistics.median(a), statistics.median(b)) for op, (a, b) in times.items()}


def random_checkpoint() -> str:
    """The default architecture with random weights: the speed of the real model, no training."""
    import torch

    from codec import Codec, CodecConfig, build_model

    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp()) / "random.safetensors"
    Codec(build_model(CodecConfig()), "random").save(path)
    return str(path)


def print_table(title: str, results: list[RunResult]) -> None:
    print(f"\n{title}")
    print(
        f"{'rate/s':>7} {'sent':>5} {'ok':>5} {'rejected':>8} {'audio s/s':>10} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7}"
    )
    for r in results:
        print(
            f"{r.rate:7g} {r.sent:5d} {r.ok:5d} {r.rejected:8d} {r.audio_per_second:10.1f} "
            f"{r.p50:7.3f} {r.p95:7.3f} {r.p99:7.3f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server; default: start one with batching and one without")
    parser.add_argument("--checkpoint", help="codec checkpoint for the servers started here; default: bundled")
    parser.add_argument("--random-weights", action="store_true", help="use the default architecture, untrained")
    parser.add_argument("--rates", default="2,4,8", help="arrival rates to try, requests per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of arrivals per rate")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, server and in-process")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30, help="rounds of the overhead measurement")
    parser.add_argument("--api-key", default=os.environ.get("CODEC_API_KEY"))
    args = parser.parse_args(argv)

    rates = [float(r) for r in args.rates.split(",")]
    clip = speech_like_clip(args.clip_seconds)
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    if args.url:
        print_table(
            f"{args.url}, {args.clip_seconds:g} s clips",
            [asyncio.run(open_loop(args.url, clip, args.clip_seconds, r, args.duration, headers)) for r in rates],
        )
        return

    checkpoint = random_checkpoint() if args.random_weights else args.checkpoint
    env = {"CODEC_PRIOR_CHECKPOINT": "", "CODEC_TORCH_THREADS": str(args.threads), "CODEC_API_KEY": args.api_key or ""}
    if checkpoint:
        env["CODEC_CHECKPOINT"] = checkpoint
    batches = {"batching on": args.max_batch_size, "batching off": 1}
    tables: dict[str, list[RunResult]] = {name: [] for name in batches}
    logs = Path(tempfile.mkdtemp(prefix="loadtest-"))
    with ExitStack() as stack:  # both servers up at once; runs alternate, so drift hits both alike
        urls = {
            name: stack.enter_context(
                running_server({**env, "CODEC_MAX_BATCH_SIZE": str(size)}, logs / f"server-{size}.log")
            ).url
            for name, size in batches.items()
        }
        # The overhead of the server as it is deployed (batching on), next to the in-process run.
        latencies = overhead_latencies(urls["batching on"], checkpoint, clip, args.repeats, args.threads, headers)
        for rate in rates:
            for name, url in urls.items():
                tables[name].append(asyncio.run(open_loop(url, clip, args.clip_seconds, rate, args.duration, headers)))
    for name, size in batches.items():
        print_table(f"{name} (max batch {size}), {args.clip_seconds:g} s clips, {args.threads} threads", tables[name])

    print(
        f"\none {args.clip_seconds:g} s clip at a time, in-process (a separate process) and HTTP calls in "
        f"alternating blocks (median of {args.repeats}):"
    )
    for op, (local, http) in latencies.items():
        print(
            f"  {op}: in-process {local * 1000:7.1f} ms, over HTTP {http * 1000:7.1f} ms, "
            f"overhead {100 * (http / local - 1):+.1f}%"
        )
    on, off = tables["batching on"], tables["batching off"]
    gain = max(r.audio_per_second for r in on) / max(r.audio_per_second for r in off)
    print(f"batching gain (best throughput, on / off): {gain:.2f}x")


if __name__ == "__main__":
    main()
