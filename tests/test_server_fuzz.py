"""No input makes the server fail: a schema-driven fuzz run (schemathesis, against the app's own
OpenAPI schema) and a corpus of malformed audio, sent to a real server process; every answer is
below 500, and the process's memory stays bounded."""

from __future__ import annotations

import io
import struct

import httpx
import numpy as np
import pytest
import schemathesis
import soundfile as sf
from conftest import harmonic_signal
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from bench.server_process import running_server
from server.app import create_app
from server.settings import Settings

pytestmark = pytest.mark.slow

API_KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
LIMITS = {"CODEC_MAX_AUDIO_SECONDS": "20", "CODEC_MAX_BODY_BYTES": str(4 * 2**20), "CODEC_MAX_SAMPLE_SECONDS": "2"}


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tiny_prior_checkpoint, tmp_path_factory):
    env = {
        "CODEC_CHECKPOINT": str(tiny_checkpoint),
        "CODEC_PRIOR_CHECKPOINT": str(tiny_prior_checkpoint),
        "CODEC_API_KEY": API_KEY,
        **LIMITS,
    }
    with running_server(env, tmp_path_factory.mktemp("fuzz") / "server.log") as process:
        yield process
        assert process.process.poll() is None, process.output()


@schemathesis.serializer("audio/wav", "audio/flac", "audio/ogg")
def _raw_audio(ctx, value):
    return value if isinstance(value, bytes) else str(value).encode()


# The schema comes from the app itself; building the app loads no model. (Loading it from the
# running server through schemathesis.pytest.from_fixture breaks on pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(Settings(checkpoint=None)).openapi())


# Message framing belongs to the HTTP layer: uvicorn answers a malformed Content-Length with a
# plain-text 400 before the app sees the request, which no OpenAPI schema can document.
FRAMING_HEADERS = {"content-length", "transfer-encoding", "host", "connection"}


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schema_fuzz_finds_no_failure(case, server):
    if case.headers:
        case.headers = {k: v for k, v in case.headers.items() if k.lower() not in FRAMING_HEADERS}
    # Schemathesis's checks (no 5xx, documented statuses and content types, responses that match
    # their schemas, requests without the key refused) but two that judge requests by the schema
    # alone: bytes that fit it ("a binary string") are rarely audio, codes that fit it need not
    # fit the loaded model, and unknown query parameters are ignored, as HTTP APIs do.
    response = case.call_and_validate(
        base_url=server.url,
        headers=AUTH,
        timeout=60,
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
    )
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert isinstance(response.json()["detail"], str)


def wav_header(channels=1, rate=16000, bits=16, tag=1, data_size=None, riff_size=None, data=b"") -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def encoded(seconds=1.0, rate=16000, fmt="WAV", subtype="PCM_16", samples=None) -> bytes:
    buffer = io.BytesIO()
    data = harmonic_signal(seconds, rate, 0) if samples is None else samples
    sf.write(buffer, data, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


# Odd but legal: streaming writers leave the RIFF size open, and libsndfile reads such files.
READABLE = {"open riff length"}


def malformed_corpus() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    wav, flac, ogg = encoded(), encoded(fmt="FLAC"), encoded(fmt="OGG", subtype="VORBIS")
    pcm = (rng.standard_normal(1600) * 1000).astype("<i2").tobytes()
    flac_info = flac.index(b"fLaC") + 8  # STREAMINFO body: total samples in bits 108..143
    absurd_flac = bytearray(flac)
    absurd_flac[flac_info + 13] |= 0x0F
    absurd_flac[flac_info + 14 : flac_info + 18] = b"\xff\xff\xff\xff"
    nan = np.full(1600, np.nan, dtype=np.float32)
    corpus = {
        "empty": b"",
        "one byte": b"R",
        "random 1k": rng.bytes(1024),
        "random 64k": rng.bytes(65536),
        "riff magic then random": b"RIFF" + rng.bytes(2000),
        "header only": wav[:44],
        "truncated header 12": wav[:12],
        "truncated header 30": wav[:30],
        "truncated data": wav[: len(wav) // 2],
        "absurd data length": wav_header(data_size=0x7FFFFFFF, data=pcm),
        "open riff length": wav_header(riff_size=0xFFFFFFFF, data=pcm),
        "zero channels": wav_header(channels=0, data=pcm),
        "65535 channels": wav_header(channels=65535, data=pcm),
        "300 channels": wav_header(channels=300, bits=8, data=rng.bytes(3000)),
        "zero sample rate": wav_header(rate=0, data=pcm),
        "1 Hz": wav_header(rate=1, data=pcm[:40]),
        "huge sample rate": wav_header(rate=4_000_000_000, data=pcm),
        "zero bits": wav_header(bits=0, data=pcm),
        "unknown format tag": wav_header(tag=0x1234, data=pcm),
        "float NaN": encoded(samples=nan, subtype="FLOAT"),
        "float inf": encoded(samples=np.full(1600, np.inf, dtype=np.float32), subtype="FLOAT"),
        "too long at 8 kHz": wav_header(rate=8000, bits=8, data=b"\x80" * 8000 * 21),
        "flac truncated": flac[: len(flac) // 3],
        "flac absurd length": bytes(absurd_flac),
        "flac magic then random": b"fLaC" + rng.bytes(500),
        "ogg truncated": ogg[: len(ogg) // 3],
        "ogg magic then random": b"OggS" + rng.bytes(500),
        "stream file as audio": b"VQAC\x01" + rng.bytes(100),
    }
    return corpus


@pytest.mark.parametrize("form", ["raw", "multipart"])
def test_malformed_audio_gets_a_clean_4xx(server, form):
    before = server.rss_bytes()
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        for name, data in malformed_corpus().items():
            if form == "raw":
                response = client.post("/encode", content=data, headers={"content-type": "audio/wav"})
            else:
                response = client.post("/encode", files={"file": ("x.wav", data, "audio/wav")})
            if name in READABLE:
                assert response.status_code in (200, 413), f"{name}: {response.status_code} {response.text[:300]}"
                continue
            assert 400 <= response.status_code < 500, f"{name}: {response.status_code} {response.text[:300]}"
            assert isinstance(response.json()["detail"], str), name
        for name, data in malformed_corpus().items():  # and as codec streams
            response = client.post("/decode", content=data, headers={"content-type": "application/octet-stream"})
            assert 400 <= response.status_code < 500, f"{name}: {response.status_code} {response.text[:300]}"
        assert client.get("/readyz").status_code == 200
    growth = server.rss_bytes() - before
    assert growth < 300 * 2**20, f"resident memory grew by {growth / 2**20:.0f} MiB"
