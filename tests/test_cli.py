"""The `codec` command: round trips, stdin/stdout, and one clear line for every kind of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from codec import Codec, bitstream

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


@pytest.mark.parametrize("coding", ["entropy", "entropy+pitch"])
def test_a_tiny_file_declaring_hours_of_frames_is_refused_without_allocating(
    tiny_codec, checkpoint, tiny_prior_checkpoint, tmp_path, coding
):
    """A 60-odd-byte file whose header claims 2**36 samples: one line, exit 1, and the decoder
    never allocates for the frames it claims (peak RSS of the process stays small)."""
    samples = 2**36
    header = bitstream.StreamHeader(
        model_id=Codec.load(checkpoint).model_id,
        sample_rate=tiny_codec.sample_rate,
        hop_length=tiny_codec.config.hop_length,
        num_levels=1,
        codebook_size=tiny_codec.config.quantizer.codebook_size,
        num_samples=samples,
        num_frames=-(-samples // tiny_codec.config.hop_length),
        coding=coding,
    )
    # (A packed stream must carry all its codes: the reader already bounds it by the file size.)
    pitch = bytes(3) if coding.endswith("+pitch") else None
    data = bitstream.write_stream(header, payload=bytes(20), pitch=pitch)
    crafted = tmp_path / "crafted.vqac"
    crafted.write_bytes(data)
    assert len(data) < 100
    code = (
        "import sys\n"
        "from codec.cli import main\n"
        "try:\n    status = main(sys.argv[1:])\nexcept SystemExit as e:\n    status = e.code\n"
        # VmHWM, not ru_maxrss: the latter carries the parent's (pytest's) peak across fork and exec.
        "hwm = [line for line in open('/proc/self/status') if line.startswith('VmHWM')][0].split()[1]\n"
        "print('PEAK', int(hwm) // 1024, 'STATUS', status)\n"
    )
    options = ["--checkpoint", str(checkpoint), "--prior", str(tiny_prior_checkpoint)]
    result = subprocess.run(
        [sys.executable, "-c", code, "decode", str(crafted), str(tmp_path / "out.wav"), *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    peak, status = int(result.stdout.split()[1]), result.stdout.split()[3]
    assert status == "1" and peak < 1200, result.stdout + result.stderr  # MB (PyTorch alone ~700); 2**36 samples: GBs
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot hold" in lines[0]
    assert not (tmp_path / "out.wav").exists()


def test_output_over_the_input_is_refused(checkpoint, tmp_path):
    source = tmp_path / "same.wav"
    source.write_bytes(SPEECH.read_bytes())
    alias = tmp_path / "alias.wav"
    alias.hardlink_to(source)
    for output in (source, alias):
        result = run("encode", str(source), str(output), "--checkpoint", str(checkpoint))
        assert result.returncode == 1 and b"is the input file" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert source.read_bytes() == SPEECH.read_bytes()
    coded = tmp_path / "speech.vqac"
    assert run("encode", str(source), str(coded), "--checkpoint", str(checkpoint)).returncode == 0
    before = coded.read_bytes()
    result = run("decode", str(coded), str(coded), "--checkpoint", str(checkpoint))
    assert result.returncode == 1 and b"is the input file" in result.stderr and coded.read_bytes() == before


def test_sigterm_removes_the_partial_output(checkpoint, tmp_path):
    """A decode killed with SIGTERM mid-write exits 143 and leaves neither the output nor its
    hidden temporary file."""
    import signal
    import time

    long = tmp_path / "long.wav"
    sf.write(long, np.random.default_rng(0).normal(0, 0.1, 16000 * 600).astype(np.float32), 16000)
    coded = tmp_path / "long.vqac"
    assert run("encode", str(long), str(coded), "--checkpoint", str(checkpoint), "-q").returncode == 0
    out = tmp_path / "out" / "long.wav"
    out.parent.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "codec", "decode", str(coded), str(out), "--checkpoint", str(checkpoint), "-q"],
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while not list(out.parent.iterdir()) and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    if process.poll() is not None:
        pytest.skip("the decode finished before it could be interrupted")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and b"terminated" in stderr
    assert list(out.parent.iterdir()) == []
