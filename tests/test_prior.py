"""The token prior: cached generation equals recomputation, sampling is seeded, entropy coding is
exact and rejects damage, and the bulk tokenizer resumes and parallelises without changing tokens."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import harmonic_signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import run_two_processes

from codec import bitstream
from codec.api import Codec
from codec.errors import CodecError, CorruptStreamError
from codec.prior import PriorConfig, TokenPriorModel
from codec.prior_api import TokenPrior
from codec.sampling import FrameStepper
from codec.tokenize import list_inputs, load_tokens, tokenize, write_index


@pytest.fixture(scope="module")
def tiny_prior(tiny_codec) -> TokenPrior:
    torch.manual_seed(0)
    q = tiny_codec.config.quantizer
    config = PriorConfig(
        num_levels=q.num_levels,
        codebook_size=q.codebook_size,
        dim=32,
        layers=2,
        heads=2,
        depth_hidden=32,
        context=6,
        codec_model_id=tiny_codec.model_id,
    )
    return TokenPrior(TokenPriorModel(config), "prior:0123456789ab")


def test_cached_steps_equal_full_recomputation(tiny_prior):
    codes = tiny_prior.sample(0.4, seed=3)  # 20 frames: longer than the 6-frame context
    with torch.no_grad():
        full = tiny_prior.model(codes)  # [1, K, N, V], teacher forced, windowed attention
    stepper = FrameStepper(tiny_prior.model, codes.shape[1])
    for t in range(codes.shape[-1]):
        h = stepper.begin_frame()
        chosen = []
        for level in range(codes.shape[1]):
            logits = stepper.level_logits(h, level, chosen)
            assert torch.allclose(logits[0], full[0, level, t], atol=1e-4), (t, level)
            chosen.append(codes[:, level, t])
        stepper.end_frame(codes[:, :, t])


def test_sampling_is_seeded_and_continues_prompts(tiny_prior):
    a = tiny_prior.sample(0.3, temperature=0.9, top_k=5, seed=7)
    b = tiny_prior.sample(0.3, temperature=0.9, top_k=5, seed=7)
    c = tiny_prior.sample(0.3, temperature=0.9, top_k=5, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    continued = tiny_prior.sample(0.2, seed=1, prompt=a)
    assert continued.shape[-1] == a.shape[-1] + 10 and torch.equal(continued[..., : a.shape[-1]], a)
    with pytest.raises(ValueError):
        tiny_prior.sample(0.0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), frames=st.integers(0, 30), levels=st.integers(1, 4))
def test_entropy_coding_round_trip_on_random_streams(tiny_prior, seed, frames, levels):
    codes = torch.from_numpy(np.random.default_rng(seed).integers(0, 64, (1, levels, frames)))
    payload = tiny_prior.entropy_encode(codes)
    assert torch.equal(tiny_prior.entropy_decode(payload, levels, frames), codes)


def test_entropy_coding_real_tokens_and_rejects_damage(tiny_codec, tiny_prior):
    wav, rate = sf.read(Path(__file__).parent / "data" / "arctic_a0009.wav", dtype="float32")
    codes = tiny_codec.encode(wav, rate).codes
    payload = tiny_prior.entropy_encode(codes)
    assert torch.equal(tiny_prior.entropy_decode(payload, codes.shape[1], codes.shape[2]), codes)
    rng = np.random.default_rng(0)
    for _ in range(20):
        damaged = bytearray(payload)
        damaged[int(rng.integers(0, len(damaged)))] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(CorruptStreamError):
            tiny_prior.entropy_decode(bytes(damaged), codes.shape[1], codes.shape[2])
    with pytest.raises(CorruptStreamError):
        tiny_prior.entropy_decode(payload[:-3], codes.shape[1], codes.shape[2])
    other = TokenPrior(tiny_prior.model, "prior:ffffffffffff")
    with pytest.raises(CorruptStreamError, match="prior"):
        other.entropy_decode(payload, codes.shape[1], codes.shape[2])


def test_codec_files_entropy_coded_with_the_prior(tiny_codec, tiny_prior):
    """Codec.to_bytes/from_bytes with a prior: the same codes back from a smaller file that
    says how it was coded; it cannot be read without the prior, nor written with another
    codec's prior."""
    wav, rate = sf.read(Path(__file__).parent / "data" / "arctic_a0009.wav", dtype="float32")
    encoded = tiny_codec.encode(wav, rate, bitrate=tiny_codec.bitrates()[1])
    data = tiny_codec.to_bytes(encoded, tiny_prior)
    assert bitstream.read_stream(data).header.coding == "entropy"
    back = tiny_codec.from_bytes(data, tiny_prior)
    assert torch.equal(back.codes, encoded.codes) and back.num_samples == encoded.num_samples
    assert tiny_codec.from_bytes(tiny_codec.to_bytes(encoded), tiny_prior).codes.equal(
        encoded.codes
    )  # packed: prior unused
    with pytest.raises(CorruptStreamError, match="prior"):
        tiny_codec.from_bytes(data)
    stranger = TokenPrior(
        TokenPriorModel(dataclasses.replace(tiny_prior.config, codec_model_id="vqcodec-tiny:other")), "prior:x"
    )
    assert "vqcodec-tiny:other" in stranger.mismatch(tiny_codec) and tiny_prior.mismatch(tiny_codec) is None
    for call in (lambda: tiny_codec.to_bytes(encoded, stranger), lambda: tiny_codec.from_bytes(data, stranger)):
        with pytest.raises(CodecError, match="tokens of vqcodec-tiny:other"):
            call()
    wider = TokenPrior(
        TokenPriorModel(dataclasses.replace(tiny_prior.config, codebook_size=2 * tiny_prior.codebook_size)), "prior:y"
    )
    assert "do not fit" in wider.mismatch(tiny_codec)


def _corpus(tmp_path: Path, count: int = 7) -> Path:
    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(count):
        sf.write(folder / f"clip{i}.wav", harmonic_signal(0.3 + 0.1 * i, 16000, i), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF not really")
    return folder


def test_tokenizer_resumes_without_duplicates_or_losses(tiny_codec, tmp_path, monkeypatch):
    folder = _corpus(tmp_path)
    inputs = list_inputs(folder)
    out = tmp_path / "tokens"
    import codec.tokenize as tok

    real_encode = tok.encode_shard
    calls = []

    def crash_on_third(codec, files, bitrate, index, out_dir, progress=None):
        calls.append(index)
        if index == 2:
            raise KeyboardInterrupt  # the run dies in the middle of shard 2
        return real_encode(codec, files, bitrate, index, out_dir, progress)

    monkeypatch.setattr(tok, "encode_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        tokenize(tiny_codec, inputs, out, shard_size=3, progress=False)
    monkeypatch.setattr(tok, "encode_shard", real_encode)
    results = tokenize(tiny_codec, inputs, out, shard_size=3, progress=False)
    assert [r.skipped for r in results] == [True, True, False]
    index = write_index(out, 3)
    assert index["files"] == 7 and [f[0] for f in index["failed"]] == [str(folder / "broken.wav")]
    tokens = load_tokens(out)
    assert len(tokens) == 8  # every input once, in order; the unreadable one as an empty entry
    expected = tiny_codec.encode_file(inputs[1]).codes[0]
    assert torch.equal(tokens[1], expected)


@pytest.mark.slow
def test_two_process_tokenize_matches_one_process(tiny_codec, tmp_path):
    folder = _corpus(tmp_path, count=6)
    checkpoint = tmp_path / "tiny.safetensors"
    tiny_codec.save(checkpoint)
    base = ["tokenize", str(folder), "--checkpoint", str(checkpoint), "--shard-size", "2", "-q"]
    one = subprocess.run(
        [sys.executable, "-m", "codec", *base[:2], str(tmp_path / "one"), *base[2:]],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = run_two_processes("codec", *base[:2], str(tmp_path / "two"), *base[2:], timeout=300)
    assert two.returncode == 0, two.stderr
    assert "rank 1: 2 shards encoded" in two.stderr  # the second process did its share
    a, b = load_tokens(tmp_path / "one"), load_tokens(tmp_path / "two")
    assert len(a) == len(b) == 7
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert json.loads((tmp_path / "two" / "index.json").read_text())["files"] == 6


def test_prior_evaluation_reports_exact_coding_and_real_file_sizes(
    tiny_corpus, tiny_checkpoint, tiny_prior_checkpoint, tmp_path, capsys
):
    from training import evaluate_prior
    from training.data import read_manifest

    out = tmp_path / "eval"
    evaluate_prior.main(
        [
            "--manifest",
            str(tiny_corpus),
            "--split",
            "val",
            "--codec",
            str(tiny_checkpoint),
            "--prior",
            str(tiny_prior_checkpoint),
            "--bitrates",
            "0.6,1.2",
            "--out",
            str(out),
            "--threads",
            "1",
        ]
    )
    with (out / "prior.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    codec, prior = Codec.load(tiny_checkpoint), TokenPrior.load(tiny_prior_checkpoint)
    clips = read_manifest(tiny_corpus, "val")
    assert [int(r["levels"]) for r in rows] == [2, 4]
    for row, kbps in zip(rows, (0.6, 1.2)):
        assert int(row["coded_files"]) == len(clips) == int(row["exact_files"])
        # Sizes are those of the real files, header included.
        encoded = [codec.encode_file(c.path, bitrate=kbps) for c in clips]
        assert int(row["packed_file_bytes"]) == sum(len(codec.to_bytes(e)) for e in encoded)
        bits = sum(prior.cross_entropy(e.codes) * e.codes.numel() for e in encoded)
        assert float(row["bits_per_token"]) == pytest.approx(bits / sum(e.codes.numel() for e in encoded), rel=1e-3)
        assert int(row["entropy_file_bytes"]) > 0
    assert "bits/token" in capsys.readouterr().out


def _tiny_prior_run(tiny_codec, tiny_corpus, tmp_path) -> list[str]:
    """Arguments of a tiny prior training run on the tiny corpus's tokens."""
    for split in ("train", "val"):
        tokenize(tiny_codec, list_inputs(tiny_corpus, split), tmp_path / split, progress=False)
        write_index(tmp_path / split, 1)
    return [
        "--train_tokens",
        str(tmp_path / "train"),
        "--val_tokens",
        str(tmp_path / "val"),
        "--dim",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--depth_hidden",
        "32",
        "--context",
        "20",
        "--batch_size",
        "2",
        "--seq_frames",
        "16",
        "--warmup_steps",
        "2",
        "--val_every",
        "4",
        "--save_every",
        "3",
        "--val_frames",
        "40",
    ]


def test_prior_training_resumes_exactly_and_validates_its_last_step(tiny_codec, tiny_corpus, tmp_path):
    from training import train_prior

    args = _tiny_prior_run(tiny_codec, tiny_corpus, tmp_path)
    train_prior.main(args + ["--run_dir", str(tmp_path / "whole"), "--steps", "6"])
    train_prior.main(args + ["--run_dir", str(tmp_path / "split"), "--steps", "3"])
    train_prior.main(args + ["--run_dir", str(tmp_path / "split"), "--steps", "6"])  # resumes at step 3
    whole = TokenPrior.load(tmp_path / "whole" / "last.safetensors").model.state_dict()
    split = TokenPrior.load(tmp_path / "split" / "last.safetensors").model.state_dict()
    assert whole.keys() == split.keys()
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    # Validated every 4 steps and once more at the end, which stopped between validations.
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val" in r] == [4, 6]
    best = TokenPrior.load(tmp_path / "whole" / "best.safetensors")
    assert best.config.codec_model_id == tiny_codec.model_id


def test_prior_training_can_start_from_another_priors_weights(tiny_codec, tiny_corpus, tmp_path):
    from training import train_prior

    args = _tiny_prior_run(tiny_codec, tiny_corpus, tmp_path)
    train_prior.main(args + ["--run_dir", str(tmp_path / "first"), "--steps", "3"])
    source = tmp_path / "first" / "last.safetensors"
    # A zero learning rate leaves the weights where they started: those of the source prior.
    train_prior.main(
        args + ["--run_dir", str(tmp_path / "warm"), "--steps", "1", "--learning_rate", "0", "--init_from", str(source)]
    )
    start = TokenPrior.load(source).model.state_dict()
    warm = TokenPrior.load(tmp_path / "warm" / "last.safetensors").model.state_dict()
    assert all(torch.equal(start[k], warm[k]) for k in start)
    with pytest.raises(SystemExit, match="another shape"):
        train_prior.main(
            args + ["--run_dir", str(tmp_path / "wide"), "--steps", "1", "--dim", "64", "--init_from", str(source)]
        )
