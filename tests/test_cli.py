"""The `codec` command: round trips, stdin/stdout, and one clear line for every kind of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from codec import bitstream

SPEECH = Path(__file__).parent / "data" / "arctic_a0009.wav"


@pytest.fixture(scope="module")
def checkpoint(tiny_codec, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    tiny_codec.save(path)
    return path


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codec", *args], input=stdin, capture_output=True, timeout=120)


def test_round_trip_real_speech(checkpoint, tmp_path):
    encoded, decoded = tmp_path / "a.vqac", tmp_path / "a.wav"
    result = run("encode", str(SPEECH), str(encoded), "--bitrate", "0.9", "--checkpoint", str(checkpoint))
    assert result.returncode == 0, result.stderr
    data = encoded.read_bytes()
    header = bitstream.read_stream(data).header
    info = sf.info(SPEECH)
    assert header.num_samples == info.frames and header.num_levels == 3
    # The file is the code bitrate plus the header: 3 levels x 6 bits x 50 frames/s.
    assert len(data) - header.packed_size < 200
    assert header.packed_size == -(-header.num_frames * 3 * 6 // 8)

    result = run("decode", str(encoded), str(decoded), "--checkpoint", str(checkpoint))
    assert result.returncode == 0, result.stderr
    out = sf.info(decoded)
    assert (out.samplerate, out.channels, out.frames, out.subtype) == (16000, 1, info.frames, "PCM_16")

    result = run("info", str(encoded))
    assert result.returncode == 0 and b"0.9 kbps" in result.stdout


def test_stdin_stdout_and_resampling(checkpoint, tmp_path):
    rate = 44100
    stereo = np.stack([np.sin(np.arange(rate) * 0.05), np.cos(np.arange(rate) * 0.03)], axis=1) * 0.3
    sf.write(tmp_path / "in.flac", stereo, rate)
    encoded = run("encode", "-", "-", "--checkpoint", str(checkpoint), stdin=(tmp_path / "in.flac").read_bytes())
    assert encoded.returncode == 0, encoded.stderr
    decoded = run("decode", "-", "-", "--checkpoint", str(checkpoint), stdin=encoded.stdout)
    assert decoded.returncode == 0, decoded.stderr
    (tmp_path / "out.wav").write_bytes(decoded.stdout)
    audio, out_rate = sf.read(tmp_path / "out.wav")
    assert out_rate == 16000 and audio.shape == (16000,)


def test_decode_to_flac(checkpoint, tmp_path):
    sf.write(tmp_path / "in.wav", np.zeros(8000), 16000)
    assert (
        run("encode", str(tmp_path / "in.wav"), str(tmp_path / "x.vqac"), "--checkpoint", str(checkpoint)).returncode
        == 0
    )
    assert (
        run("decode", str(tmp_path / "x.vqac"), str(tmp_path / "x.flac"), "--checkpoint", str(checkpoint)).returncode
        == 0
    )
    assert sf.info(tmp_path / "x.flac").format == "FLAC"


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    wav = tmp_path / "ok.wav"
    sf.write(wav, np.sin(np.arange(16000) * 0.1) * 0.5, 16000)
    good = wav.read_bytes()
    nan = tmp_path / "nan.wav"
    samples = np.zeros(4000, dtype=np.float32)
    samples[100] = np.nan
    sf.write(nan, samples, 16000, subtype="FLOAT")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0), 16000)
    return {
        "not audio": (b"hello, this is text\n" * 10, "cannot read"),
        "zero bytes": (b"", "empty"),
        "header only": (empty.read_bytes(), "empty"),
        "nan samples": (nan.read_bytes(), "NaN"),
        "truncated": (good[:60], "cannot read|truncated|empty"),
        "random bytes": (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "cannot read"),
    }


@pytest.mark.parametrize("case", ["not audio", "zero bytes", "header only", "nan samples", "truncated", "random bytes"])
def test_encode_bad_input_one_line(checkpoint, tmp_path, case):
    data, pattern = _bad_inputs(tmp_path)[case]
    path = tmp_path / "bad.input"
    path.write_bytes(data)
    out = tmp_path / "out.vqac"
    result = run("encode", str(path), str(out), "--checkpoint", str(checkpoint))
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    import re

    assert re.search(pattern, stderr), stderr
    assert not out.exists()  # nothing half-written is left behind
    assert not list(tmp_path.glob(".out.vqac*"))


def test_decode_bad_streams_one_line(checkpoint, tmp_path):
    sf.write(tmp_path / "in.wav", np.sin(np.arange(8000) * 0.1) * 0.5, 16000)
    run("encode", str(tmp_path / "in.wav"), str(tmp_path / "ok.vqac"), "--checkpoint", str(checkpoint))
    good = (tmp_path / "ok.vqac").read_bytes()
    flipped = bytearray(good)
    flipped[-3] ^= 0x40
    cases = {"truncated": good[:-5], "flipped": bytes(flipped), "wav": (tmp_path / "in.wav").read_bytes(), "empty": b""}
    for name, data in cases.items():
        (tmp_path / "bad.vqac").write_bytes(data)
        result = run("decode", str(tmp_path / "bad.vqac"), str(tmp_path / "out.wav"), "--checkpoint", str(checkpoint))
        stderr = result.stderr.decode()
        assert result.returncode == 1, name
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, (name, stderr)
        assert not (tmp_path / "out.wav").exists()


def test_missing_file_and_bad_options(checkpoint, tmp_path):
    result = run("encode", str(tmp_path / "nope.wav"), str(tmp_path / "x"), "--checkpoint", str(checkpoint))
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    result = run("encode", str(SPEECH), str(tmp_path / "x"), "--bitrate", "-3", "--checkpoint", str(checkpoint))
    assert result.returncode == 1 and b"bitrate" in result.stderr
    result = run("encode", str(SPEECH), str(tmp_path / "x"), "--checkpoint", str(tmp_path / "none.safetensors"))
    assert result.returncode == 1 and b"checkpoint" in result.stderr


def test_pitch_side_stream_round_trip(checkpoint, tmp_path):
    plain, pitched, decoded = tmp_path / "a.vqac", tmp_path / "p.vqac", tmp_path / "p.wav"
    for path, extra in ((plain, ()), (pitched, ("--pitch",))):
        result = run("encode", str(SPEECH), str(path), "--bitrate", "0.9", "--checkpoint", str(checkpoint), *extra)
        assert result.returncode == 0, result.stderr
    stream = bitstream.read_stream(pitched.read_bytes())
    assert stream.header.coding == "packed+pitch" and stream.pitch
    assert stream.payload == bitstream.read_stream(plain.read_bytes()).payload  # the same codes
    result = run("decode", str(pitched), str(decoded), "--checkpoint", str(checkpoint))
    assert result.returncode == 0, result.stderr
    assert sf.info(decoded).frames == sf.info(SPEECH).frames
    result = run("info", str(pitched))
    assert result.returncode == 0 and b"packed+pitch" in result.stdout
