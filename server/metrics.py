"""Prometheus metrics, on a registry of the app's own so that several apps (tests) never clash."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from server.batching import BatchObserver

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics(BatchObserver):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            "codec_request_duration_seconds",
            "Time from request to response, by route and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("codec_requests_in_flight", "Requests being handled", registry=r)
        self.queue_wait = Histogram(
            "codec_queue_wait_seconds",
            "Time a job waited before its batch ran",
            ["queue"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth_gauge = Gauge("codec_queue_depth", "Jobs waiting for the model", ["queue"], registry=r)
        self.batch_size = Histogram(
            "codec_batch_size",
            "Jobs per model call",
            ["queue"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "codec_batch_duration_seconds",
            "Model time per batch",
            ["queue"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter(
            "codec_audio_seconds",
            "Seconds of audio processed, by operation",
            ["operation"],
            registry=r,
        )
        self.errors = Counter("codec_errors", "Failed requests, by kind", ["kind"], registry=r)
        self.interrupted_batches = Counter(
            "codec_interrupted_batches",
            "Model work stopped because every caller had left (timeout, disconnect)",
            ["queue"],
            registry=r,
        )

    # BatchObserver
    def queue_depth(self, name: str, depth: int) -> None:
        self.queue_depth_gauge.labels(name).set(depth)

    def batch(self, name: str, size: int, waits: Sequence[float], seconds: float) -> None:
        self.batch_size.labels(name).observe(size)
        self.batch_duration.labels(name).observe(seconds)
        for wait in waits:
            self.queue_wait.labels(name).observe(wait)

    def interrupted(self, name: str) -> None:
        self.interrupted_batches.labels(name).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
