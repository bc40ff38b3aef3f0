"""The HTTP service end to end, on the real app with a tiny model: round trips for every input
form, token formats, errors, limits, auth, readiness, metrics, batching, the prior, shutdown."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import harmonic_signal
from fastapi.testclient import TestClient

from bench.server_process import running_server
from codec import Codec, EncodedAudio, bitstream
from server.app import _fail_readiness_on_sigterm, create_app
from server.settings import Settings


def audio_bytes(seconds: float = 1.0, rate: int = 16000, channels: int = 1, fmt: str = "WAV", seed: int = 0) -> bytes:
    mono = harmonic_signal(seconds, rate, seed)
    data = np.stack([mono * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format=fmt, subtype="VORBIS" if fmt == "OGG" else "PCM_16")
    return buffer.getvalue()


@contextmanager
def client(checkpoint, **overrides):
    settings = Settings(checkpoint=checkpoint, prior_checkpoint=overrides.pop("prior_checkpoint", None), **overrides)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@contextmanager
def held_model(test_client):
    """Encode batches block in the model until the yielded event is set (a busy model);
    `release.entered` is set once a batch is in the model."""
    engine = test_client.app.state.engine
    release, process = threading.Event(), engine.encoder.process
    release.entered = threading.Event()

    def held(key, jobs):
        release.entered.set()
        release.wait(30)
        return process(key, jobs)

    engine.encoder.process = held
    try:
        yield release
    finally:
        release.set()
        engine.encoder.process = process


def wait_for(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture(scope="module")
def api(tiny_checkpoint, tiny_prior_checkpoint):
    with client(tiny_checkpoint, prior_checkpoint=tiny_prior_checkpoint) as test_client:
        yield test_client


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text output (0 if absent)."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match and match[1] == name and wanted <= set(filter(None, (match[2] or "").split(","))):
            return float(match[3])
    return 0.0


def assert_error(response: httpx.Response, status: int, contains: str = "") -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and contains.lower() in detail.lower(), detail


@pytest.mark.parametrize("form", ["multipart", "wav", "flac", "ogg"])
def test_round_trip_for_each_input_form(api, form):
    rate, channels = (44100, 2) if form != "wav" else (16000, 1)
    data = audio_bytes(1.3, rate, channels, "OGG" if form == "ogg" else ("FLAC" if form == "flac" else "WAV"))
    if form == "multipart":
        response = api.post("/encode", files={"file": ("clip.wav", data, "audio/wav")})
    else:
        response = api.post("/encode", content=data, headers={"content-type": f"audio/{form}"})
    assert response.status_code == 200, response.text
    tokens = response.json()
    expected_samples = round(1.3 * 16000)
    assert abs(tokens["num_samples"] - expected_samples) <= 1
    assert len(tokens["codes"]) == tokens["num_levels"] == 4
    assert len(tokens["codes"][0]) == -(-tokens["num_samples"] // 320)
    assert tokens["sample_rate"] == 16000 and tokens["frame_rate"] == 50
    decoded = api.post("/decode", json=tokens)
    assert decoded.status_code == 200 and decoded.headers["content-type"] == "audio/wav"
    audio, sample_rate = sf.read(io.BytesIO(decoded.content))
    assert sample_rate == 16000 and audio.shape == (tokens["num_samples"],)


def test_server_codes_equal_the_library(api, tiny_checkpoint):
    data = audio_bytes(1.0, 22050, 2, "FLAC", seed=3)
    codes = torch.tensor(api.post("/encode", content=data, headers={"content-type": "audio/flac"}).json()["codes"])
    assert torch.equal(codes, Codec.load(tiny_checkpoint).encode_file(data).codes[0])


def test_json_and_binary_tokens_agree(api):
    data = audio_bytes(0.7, seed=1)
    as_json = api.post("/encode?bitrate=0.6", content=data, headers={"content-type": "audio/wav"}).json()
    binary = api.post(
        "/encode?bitrate=0.6", content=data, headers={"content-type": "audio/wav", "accept": "application/octet-stream"}
    )
    assert binary.headers["content-type"] == "application/octet-stream"
    codec = api.app.state.engine.codec
    assert codec.from_bytes(binary.content).codes[0].tolist() == as_json["codes"]
    assert as_json["num_levels"] == 2 and as_json["bitrate"] == 0.6
    wav_from_json = api.post("/decode", json=as_json).content
    wav_from_binary = api.post("/decode", content=binary.content, headers={"content-type": "application/octet-stream"})
    assert wav_from_binary.content == wav_from_json
    flac = api.post("/decode?format=flac", json=as_json)
    assert flac.headers["content-type"] == "audio/flac"
    # The same samples, give or take the last bit of libsndfile's float -> 16-bit rounding.
    assert np.abs(sf.read(io.BytesIO(flac.content))[0] - sf.read(io.BytesIO(wav_from_json))[0]).max() <= 2 / 32768
    assert api.post("/decode", json=as_json, headers={"accept": "audio/flac"}).content == flac.content


def test_bad_input_gets_a_json_4xx(api):
    wav = audio_bytes(0.5)
    raw = {"content-type": "audio/wav"}
    assert_error(api.post("/encode", content=b"", headers=raw), 400, "empty")
    assert_error(api.post("/encode", content=b"RIFF\x00\x01garbage", headers=raw), 400, "cannot read")
    assert_error(api.post("/encode", content=wav, headers={"content-type": "text/plain"}), 415, "content type")
    assert_error(api.post("/encode", files={"other": ("a.wav", wav)}), 400, "file")
    assert_error(api.post("/encode?bitrate=0.01", content=wav, headers=raw), 422, "bitrate")
    assert_error(api.post("/encode?bitrate=nan", content=wav, headers=raw), 422, "bitrate")
    assert_error(
        api.post("/decode", content=b"VQAC\x01junk", headers={"content-type": "application/octet-stream"}), 400
    )
    assert_error(api.post("/decode", content=b"{", headers={"content-type": "application/json"}), 422, "json")
    assert_error(api.post("/decode", json={"codes": [[1, 2], [3]]}), 422, "same length")
    assert_error(api.post("/decode", json={"codes": [[1, 2], [3, 64]]}), 422, "[0, 64)")
    assert_error(api.post("/decode", json={"codes": [[1]] * 5}), 422, "1 to 4 rows")
    assert_error(api.post("/decode", json={"codes": [[1.5]]}), 422, "integer")
    assert_error(api.post("/decode", json={"codes": [[1, 2]], "num_samples": 5000}), 422, "num_samples")
    assert_error(api.post("/decode", json={"codes": [[1]], "model_id": "other:123"}), 422, "other:123")
    assert_error(api.post("/decode", json={"codes": [[]]}), 422, "no frames")
    assert_error(api.get("/nowhere"), 404)
    assert_error(api.get("/encode"), 405)


def test_limits(tiny_checkpoint):
    with client(tiny_checkpoint, max_audio_seconds=1.0, max_body_bytes=200_000, max_channels=2) as limited:
        raw = {"content-type": "audio/wav"}
        assert_error(limited.post("/encode", content=audio_bytes(1.5), headers=raw), 413, "1 s")
        assert_error(limited.post("/encode", content=audio_bytes(0.5, channels=3), headers=raw), 400, "channels")
        assert_error(limited.post("/encode", content=b"\0" * 300_000, headers=raw), 413, "body")
        chunked = limited.post("/encode", content=iter([b"\0" * 100_000] * 3), headers=raw)  # no Content-Length
        assert_error(chunked, 413, "body")
        assert_error(limited.post("/decode", json={"codes": [[1] * 60]}), 413, "frames")
        assert limited.post("/encode", content=audio_bytes(0.9), headers=raw).status_code == 200


def test_auth(tiny_checkpoint):
    with client(tiny_checkpoint, api_key="s3cret") as secured:
        assert_error(secured.get("/model"), 401, "API key")
        assert_error(secured.get("/model", headers={"authorization": "Bearer wrong"}), 401)
        assert_error(secured.post("/encode", content=audio_bytes(0.2), headers={"content-type": "audio/wav"}), 401)
        assert_error(secured.get("/metrics", headers={"authorization": "Basic s3cret"}), 401)
        assert secured.get("/model", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert secured.get("/livez").status_code == 200 and secured.get("/readyz").status_code == 200


def test_auth_comes_before_the_body_and_covers_the_docs(tiny_checkpoint):
    """Without the key nothing of the body is read (a 60 MB JSON body is not parsed, nor even
    received), and the API docs are behind the key unless public_docs is set."""
    app = create_app(Settings(checkpoint=tiny_checkpoint, prior_checkpoint=None, api_key="s3cret"))
    received, statuses = [], []

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": b"[" * 1024, "more_body": True}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {**encode_scope(60 * 2**20), "path": "/sample", "raw_path": b"/sample"}
    scope["headers"] = [(b"content-type", b"application/json"), (b"content-length", str(60 * 2**20).encode())]
    with TestClient(app) as secured:
        secured.portal.call(app, scope, receive, send)
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert_error(secured.get(path), 401, "API key")
        assert secured.get("/openapi.json", headers={"authorization": "Bearer s3cret"}).status_code == 200
        text = secured.get("/metrics", headers={"authorization": "bearer s3cret"}).text
    assert statuses == [401] and received == []
    assert metric(text, "codec_errors_total", kind="unauthorized") == 4
    with client(tiny_checkpoint, api_key="s3cret", public_docs=True) as documented:
        assert documented.get("/openapi.json").status_code == 200 and documented.get("/docs").status_code == 200
        assert_error(documented.get("/model"), 401)


def test_readiness_reports_a_full_queue(tiny_checkpoint):
    raw = {"content-type": "audio/wav"}
    with client(tiny_checkpoint, max_queue=1) as busy, held_model(busy) as release, ThreadPoolExecutor(2) as pool:
        running = pool.submit(busy.post, "/encode", content=audio_bytes(0.3), headers=raw)
        assert release.entered.wait(10), "the first request never reached the model"
        waiting = pool.submit(busy.post, "/encode", content=audio_bytes(0.3), headers=raw)
        wait_for(lambda: busy.get("/readyz").status_code == 503, "readiness never reported the full queue")
        assert_error(busy.get("/readyz"), 503, "overloaded")
        release.set()
        assert running.result().status_code == 200 and waiting.result().status_code == 200
        wait_for(lambda: busy.get("/readyz").status_code == 200, "readiness never recovered")


def test_a_timed_out_entropy_job_frees_the_model_thread(tiny_checkpoint, tiny_prior_checkpoint):
    """A request that times out while its entropy coding runs stops that work at the next frame:
    the model thread is free at once, not after the coding. Each prior step is slowed to 4 ms so
    the whole decode takes ~4 s on any machine; the request gives up after 0.5 s."""
    from codec.prior_api import TokenPrior

    codec, prior = Codec.load(tiny_checkpoint), TokenPrior.load(tiny_prior_checkpoint)
    codes = torch.randint(0, prior.codebook_size, (1, prior.num_levels, 15_000))  # 5 minutes of tokens
    samples = codes.shape[-1] * codec.config.hop_length
    stream = codec.to_bytes(EncodedAudio(codes, samples, codec.sample_rate, codec.model_id), prior)
    binary = {"content-type": "application/octet-stream"}
    with client(tiny_checkpoint, prior_checkpoint=tiny_prior_checkpoint, request_timeout_s=0.5) as slow:
        engine = slow.app.state.engine
        model = engine.prior.model
        level_logits = model.level_logits

        def slowed(*args):
            time.sleep(0.004)
            return level_logits(*args)

        model.level_logits = slowed
        assert_error(slow.post("/decode", content=stream, headers=binary), 504)
        gave_up = time.monotonic()
        freed = engine.executor.submit(time.monotonic).result(timeout=30)
        assert freed - gave_up < 1.0, f"the model thread was held {freed - gave_up:.1f} s after the timeout"
        model.level_logits = level_logits
        assert slow.post("/encode", content=audio_bytes(0.3), headers={"content-type": "audio/wav"}).status_code == 200


def test_readiness_model_info_and_metrics(api, tiny_checkpoint):
    assert api.get("/livez").json() == {"status": "alive"}
    assert api.get("/readyz").json() == {"status": "ready"}
    info = api.get("/model").json()
    engine = api.app.state.engine
    assert info["model_id"] == engine.codec.model_id == Codec.load(tiny_checkpoint).model_id
    assert info["checkpoint_sha256"] == hashlib.sha256(Path(tiny_checkpoint).read_bytes()).hexdigest()
    assert info["bitrates"] == [0.3, 0.6, 0.9, 1.2] and info["num_levels"] == 4 and info["parameters"] > 0
    assert info["prior"]["loaded"] and info["prior"]["codec_model_id"] == info["model_id"]
    api.post("/encode", content=audio_bytes(2.0), headers={"content-type": "audio/wav"})
    api.post("/encode", content=b"junk", headers={"content-type": "audio/wav"})
    text = api.get("/metrics").text
    assert metric(text, "codec_audio_seconds_total", operation="encode") >= 2.0
    assert metric(text, "codec_errors_total", kind="invalid_audio") >= 1
    assert metric(text, "codec_request_duration_seconds_count", route="/encode", status="200") >= 1
    assert metric(text, "codec_requests_in_flight") == 1  # this request
    assert metric(text, "codec_queue_wait_seconds_count", queue="encode") >= 1
    api.app.state.draining = True
    try:
        assert_error(api.get("/readyz"), 503, "shutting down")
    finally:
        api.app.state.draining = False


def test_concurrent_requests_form_batches(tiny_checkpoint):
    clips = [audio_bytes(0.8 + 0.05 * i, seed=i) for i in range(6)]
    with client(tiny_checkpoint, batch_max_wait_ms=300, max_batch_size=8) as batched:
        with ThreadPoolExecutor(6) as pool:
            responses = list(
                pool.map(lambda c: batched.post("/encode", content=c, headers={"content-type": "audio/wav"}), clips)
            )
        text = batched.get("/metrics").text
    assert all(r.status_code == 200 for r in responses)
    batches = metric(text, "codec_batch_size_count", queue="encode")
    assert metric(text, "codec_batch_size_sum", queue="encode") == 6 and batches < 6
    # Padding changes the last frames, within the encoder's reach past an item's end. Elsewhere
    # a batched convolution rounds differently from an unbatched one (~1e-7), which flips the
    # rare code whose two nearest entries are that close to a tie: under 1% of them.
    codec = Codec.load(tiny_checkpoint)
    edge = -(-codec.model.encoder_context // codec.config.hop_length) + 1
    differing = total = 0
    for clip, response in zip(clips, responses):
        alone = codec.encode_file(clip).codes[0]
        got = torch.tensor(response.json()["codes"])
        assert got.shape == alone.shape
        differing += int((got[:, :-edge] != alone[:, :-edge]).sum())
        total += alone[:, :-edge].numel()
    assert differing <= 0.01 * total, (differing, total)


def test_long_inputs_take_the_windowed_path(tiny_checkpoint):
    data = audio_bytes(2.5, 16000, seed=4)
    with client(tiny_checkpoint, batch_max_seconds=1.0) as windowed:
        tokens = windowed.post("/encode", content=data, headers={"content-type": "audio/wav"}).json()
        audio = windowed.post("/decode", json=tokens)
    codec = Codec.load(tiny_checkpoint)
    encoded = codec.encode_file(data)
    assert tokens["codes"] == encoded.codes[0].tolist()
    expected = codec.decode(encoded)[0, 0].numpy()
    assert np.abs(sf.read(io.BytesIO(audio.content))[0] - np.clip(expected, -1, 1)).max() < 2e-4


def test_full_queue_is_503_and_slow_answer_is_504(tiny_checkpoint):
    raw = {"content-type": "audio/wav"}
    with client(tiny_checkpoint, max_queue=1) as busy, held_model(busy) as release, ThreadPoolExecutor(2) as pool:
        running = pool.submit(busy.post, "/encode", content=audio_bytes(0.3), headers=raw)
        assert release.entered.wait(10), "the first request never reached the model"
        # The second request is admitted; it waits for the model thread to read its audio.
        waiting = pool.submit(busy.post, "/encode", content=audio_bytes(0.3), headers=raw)
        wait_for(
            lambda: metric(busy.get("/metrics").text, "codec_requests_in_flight") == 3,
            "the second request never arrived",
        )
        rejected = busy.post("/encode", content=audio_bytes(0.3), headers=raw)
        release.set()
        assert running.result().status_code == 200 and waiting.result().status_code == 200
    assert_error(rejected, 503, "busy")
    assert rejected.headers["retry-after"] == "1"
    with (
        client(tiny_checkpoint, request_timeout_s=0.3) as slow,
        held_model(slow) as release,
        ThreadPoolExecutor(1) as pool,
    ):
        running = pool.submit(slow.post, "/encode", content=audio_bytes(0.3), headers=raw)
        assert release.entered.wait(10), "the first request never reached the model"
        # The second waits for the busy model thread to read its audio, past its timeout.
        assert_error(slow.post("/encode", content=audio_bytes(0.3), headers=raw), 504, "timed out")
        assert_error(running.result(), 504, "timed out")  # the first, in the held model
        release.set()
        wait_for(
            lambda: metric(slow.get("/metrics").text, "codec_batch_size_count", queue="encode") == 1, "no batch ran"
        )
        time.sleep(0.2)
        text = slow.get("/metrics").text
    # The request that timed out before its audio was read never reached the model.
    assert metric(text, "codec_batch_size_sum", queue="encode") == 1
    assert metric(text, "codec_errors_total", kind="timeout") == 2


def encode_scope(content_length: int) -> dict:
    """The ASGI scope of a POST /encode of a WAV body of this length, to drive the app directly."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/encode",
        "raw_path": b"/encode",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"audio/wav"), (b"content-length", str(content_length).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def test_a_client_that_disconnects_leaves_the_queue(tiny_checkpoint):
    app = create_app(Settings(checkpoint=tiny_checkpoint, prior_checkpoint=None))
    body = audio_bytes(0.3)
    sent = []

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}  # the client is gone as soon as it has sent the body

    async def send(message):
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    scope = encode_scope(len(body))
    with TestClient(app) as test_client, held_model(test_client) as release, ThreadPoolExecutor(1) as pool:
        # A first request keeps the model busy, so the one that goes away waits in the queue.
        running = pool.submit(test_client.post, "/encode", content=body, headers={"content-type": "audio/wav"})
        assert release.entered.wait(10), "the first request never reached the model"
        test_client.portal.call(app, scope, receive, send)
        release.set()
        assert running.result().status_code == 200
        text = test_client.get("/metrics").text
    assert sent[-1] == 499
    assert metric(text, "codec_errors_total", kind="disconnected") == 1
    assert metric(text, "codec_batch_size_sum", queue="encode") == 1  # only the first reached the model


def test_sample_from_the_prior(api):
    tokens = api.post("/sample", json={"seconds": 0.5, "temperature": 0.8, "top_k": 10, "seed": 3})
    assert tokens.status_code == 200, tokens.text
    codes = tokens.json()["codes"]
    assert len(codes) == 4 and len(codes[0]) == 25
    assert (
        api.post("/sample", json={"seconds": 0.5, "temperature": 0.8, "top_k": 10, "seed": 3}).json()["codes"] == codes
    )
    prompt = [row[:5] for row in codes[:2]]
    continued = api.post("/sample", json={"seconds": 0.2, "prompt": prompt}).json()
    assert [row[:5] for row in continued["codes"]] == prompt and len(continued["codes"][0]) == 15
    audio = api.post("/sample", json={"seconds": 0.4}, headers={"accept": "audio/wav"})
    assert audio.headers["content-type"] == "audio/wav"
    assert sf.read(io.BytesIO(audio.content))[0].shape == (0.4 * 16000,)
    assert_error(api.post("/sample", json={"seconds": 0}), 422, "seconds")
    assert_error(api.post("/sample", json={"seconds": 100}), 422, "at most 30")
    assert_error(api.post("/sample", json={"seconds": 1, "top_k": 1000}), 422, "top_k")
    assert_error(api.post("/sample", json={"seconds": 1, "prompt": [[1, 2]] * 5}), 422, "1 to 4 rows")
    assert_error(api.post("/sample", json={"seconds": 1, "prompt": [[64]]}), 422, "[0, 64)")
    assert_error(api.post("/sample", content=b'{"seconds": 1}', headers={"content-type": "text/plain"}), 415)
    assert_error(api.post("/sample", content=b"{", headers={"content-type": "application/json"}), 422)
    huge = b'{"seconds": 1, "prompt": [[' + b"1, " * 400_000 + b"1]]}"
    assert_error(api.post("/sample", content=huge, headers={"content-type": "application/json"}), 413)
    chunked = iter([huge[i : i + 65536] for i in range(0, len(huge), 65536)])  # no Content-Length
    assert_error(api.post("/sample", content=chunked, headers={"content-type": "application/json"}), 413)


def test_sample_without_a_prior_is_503(tiny_checkpoint):
    with client(tiny_checkpoint) as no_prior:
        assert_error(no_prior.post("/sample", json={"seconds": 1}), 503, "no prior")
        assert no_prior.get("/model").json()["prior"]["loaded"] is False


def test_entropy_coded_streams_through_encode_and_decode(api, tiny_checkpoint):
    data = audio_bytes(0.8, seed=4)
    raw, binary = {"content-type": "audio/wav"}, {"content-type": "audio/wav", "accept": "application/octet-stream"}
    as_json = api.post("/encode?bitrate=0.6", content=data, headers=raw).json()
    packed = api.post("/encode?bitrate=0.6", content=data, headers=binary).content
    coded = api.post("/encode?bitrate=0.6&entropy=true", content=data, headers=binary)
    assert coded.status_code == 200, coded.text
    assert bitstream.read_stream(coded.content).header.coding == "entropy"
    engine = api.app.state.engine
    assert engine.codec.from_bytes(coded.content, engine.prior).codes[0].tolist() == as_json["codes"]
    stream = {"content-type": "application/octet-stream"}
    wav = api.post("/decode", content=coded.content, headers=stream)
    assert wav.status_code == 200, wav.text
    assert wav.content == api.post("/decode", content=packed, headers=stream).content
    assert_error(api.post("/encode?entropy=true", content=data, headers=raw), 422, "octet-stream")
    damaged = bytearray(coded.content)
    damaged[-1] ^= 0x10
    assert_error(api.post("/decode", content=bytes(damaged), headers=stream), 400)
    with client(tiny_checkpoint) as no_prior:
        assert_error(no_prior.post("/decode", content=coded.content, headers=stream), 503, "no prior")
        assert_error(no_prior.post("/encode?entropy=true", content=data, headers=binary), 503, "no prior")
        assert no_prior.post("/decode", content=packed, headers=stream).status_code == 200


def test_openapi_documents_every_route_with_examples(api):
    schema = api.get("/openapi.json").json()
    assert {"/encode", "/decode", "/sample", "/model", "/livez", "/readyz", "/metrics"} <= set(schema["paths"])
    encode_body = schema["paths"]["/encode"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "audio/wav", "audio/flac", "audio/ogg"} <= set(encode_body)
    assert "examples" in json.dumps(schema["components"]["schemas"]["Tokens"])


def test_the_image_runs_the_command_make_serve_runs():
    root = Path(__file__).resolve().parent.parent
    image = json.loads(re.search(r"^CMD (\[.*\])$", (root / "Dockerfile").read_text(), re.M)[1])
    serve = re.search(r"^serve:.*\n\t(.*)$", (root / "Makefile").read_text(), re.M)[1].split()
    assert [Path(serve[0]).name, *serve[1:]] == image


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_half_precision_round_trip(tiny_checkpoint):
    with client(tiny_checkpoint, device="auto", half=True) as gpu:
        info = gpu.get("/model").json()
        assert info["device"].startswith("cuda") and info["dtype"] == "float16"
        tokens = gpu.post("/encode", content=audio_bytes(1.0), headers={"content-type": "audio/wav"}).json()
        audio = gpu.post("/decode", json=tokens)
        assert sf.read(io.BytesIO(audio.content))[0].shape == (16000,)


def test_sigterm_fails_readiness_then_reaches_the_servers_handler():
    app = create_app(Settings(prior_checkpoint=None))  # no lifespan: nothing is loaded
    seen = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))  # stands in for uvicorn's
    try:
        restore = _fail_readiness_on_sigterm(app)
        os.kill(os.getpid(), signal.SIGTERM)
        assert app.state.draining and seen == [signal.SIGTERM]
        restore()
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM] * 2
    finally:
        signal.signal(signal.SIGTERM, original)


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight(tiny_checkpoint, tmp_path):
    env = {"CODEC_CHECKPOINT": str(tiny_checkpoint), "CODEC_PRIOR_CHECKPOINT": ""}
    body = audio_bytes(0.5)
    uploaded_half = threading.Event()

    def slow_upload():  # the request is in flight, its body half sent, when SIGTERM arrives
        yield body[: len(body) // 2]
        uploaded_half.set()
        time.sleep(1.0)
        yield body[len(body) // 2 :]

    with running_server(env, tmp_path / "server.log") as server:
        result = {}
        worker = threading.Thread(
            target=lambda: result.update(
                response=httpx.post(
                    f"{server.url}/encode", content=slow_upload(), headers={"content-type": "audio/wav"}, timeout=30
                )
            )
        )
        worker.start()
        assert uploaded_half.wait(10)
        wait_for(
            lambda: metric(httpx.get(f"{server.url}/metrics").text, "codec_requests_in_flight") >= 2,
            "the request never reached the server",
        )
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:  # draining: no longer ready (and soon not even listening)
            assert httpx.get(f"{server.url}/readyz", timeout=2).status_code == 503
        except httpx.TransportError:
            pass
        worker.join(30)
        server.process.wait(30)
    response = result["response"]
    assert response.status_code == 200 and len(response.json()["codes"]) == 4
    log = server.output()
    assert "Waiting for connections to close" in log and "Application shutdown complete" in log
    # uvicorn re-raises the SIGTERM it caught once it has shut down cleanly, so the exit status
    # says "terminated by SIGTERM" (143 in a shell, what `docker stop` expects), not a crash.
    assert server.process.returncode in (0, -signal.SIGTERM)


def test_a_file_with_a_pitch_stream_decodes_with_its_pitch(api):
    codec = api.app.state.engine.codec
    data = audio_bytes(0.8, seed=4)
    encoded = codec.encode_file(data, bitrate=0.6, pitch=True)
    pitched = codec.to_bytes(encoded)
    response = api.post("/decode", content=pitched, headers={"content-type": "application/octet-stream"})
    assert response.status_code == 200
    audio, _ = sf.read(io.BytesIO(response.content), dtype="float32")
    expected = codec.decode(codec.from_bytes(pitched))[0, 0].numpy()
    assert np.abs(audio - expected).max() <= 1.5 / 32768  # the library's audio, in 16 bits
    encoded.pitch = None
    without = codec.decode(encoded)[0, 0].numpy()
    assert np.abs(audio - without).max() > 1e-3  # and the pitch made a difference
    corrupt = bytearray(pitched)
    corrupt[-1] ^= 0xFF
    assert_error(api.post("/decode", content=bytes(corrupt), headers={"content-type": "application/octet-stream"}), 400)


def test_encode_writes_the_pitch_stream_on_request(api):
    codec = api.app.state.engine.codec
    data = audio_bytes(0.8, seed=5)
    binary = {"content-type": "audio/wav", "accept": "application/octet-stream"}
    response = api.post("/encode?bitrate=0.6&pitch=true", content=data, headers=binary)
    assert response.status_code == 200
    assert response.content == codec.to_bytes(codec.encode_file(data, bitrate=0.6, pitch=True))
    assert codec.from_bytes(response.content).pitch is not None
    entropy = api.post("/encode?bitrate=0.6&pitch=true&entropy=true", content=data, headers=binary)
    assert entropy.status_code == 200 and entropy.content[5] == 3  # coding byte: entropy+pitch
    assert_error(api.post("/encode?pitch=true", content=data, headers={"content-type": "audio/wav"}), 422, "pitch")


def test_a_client_that_leaves_mid_upload_is_not_a_server_error(api):
    """The body stops with http.disconnect: answered 499 and counted as a disconnect, no 500."""

    async def upload_and_leave():
        messages = [
            {"type": "http.request", "body": audio_bytes(1.0, seed=1)[:2000], "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = encode_scope(100_000)
        await api.app(scope, receive, send)
        return sent

    before = api.get("/metrics").text
    sent = api.portal.call(upload_and_leave)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [499]
    after = api.get("/metrics").text
    assert metric(after, "codec_errors_total", kind="disconnected") == 1 + metric(
        before, "codec_errors_total", kind="disconnected"
    )
    assert metric(after, "codec_errors_total", kind="internal") == metric(before, "codec_errors_total", kind="internal")
