"""The token prior: cached generation equals recomputation, sampling is seeded, entropy coding is
exact and rejects damage, and the bulk tokenizer resumes and parallelises without changing tokens."""

from __future__ import annotations

import copy
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
from tiny import run_two_processes, tiny_prior_config

from codec import bitstream, prior_api
from codec.api import Codec
from codec.errors import CodecError, CorruptStreamError
from codec.fixedpoint import EXP_TABLE, LOGIT_UNITS, IntegerPrior, Stepper, interval_starts
from codec.prior import PriorNet
from codec.prior_api import TokenPrior
from codec.tokenize import list_inputs, load_tokens, tokenize, write_index


@pytest.fixture(scope="module")
def tiny_network(tiny_codec) -> PriorNet:
    """A random float prior whose quantization steps were set by one training-mode pass."""
    torch.manual_seed(0)
    q = tiny_codec.config.quantizer
    net = PriorNet(tiny_prior_config(tiny_codec.model_id, q.num_levels, q.codebook_size))
    net.train()
    net(torch.randint(0, q.codebook_size, (2, q.num_levels, 40)))
    return net.eval()


@pytest.fixture(scope="module")
def tiny_prior(tiny_network) -> TokenPrior:
    return TokenPrior.from_network(tiny_network, "prior:0123456789ab")


def test_stepper_equals_teacher_forcing_and_the_float_network(tiny_network, tiny_prior):
    model = tiny_prior.model
    codes = torch.randint(0, tiny_prior.codebook_size, (3, 4, 40), generator=torch.Generator().manual_seed(1))
    states = model.frame_states(codes)
    stepper = Stepper(model, 3, 4)
    for t in range(codes.shape[-1]):
        assert torch.equal(stepper.frame_state(), states[:, t]), t
        stepper.push(codes[:, :, t])
    # The integer logits are the float network's, up to the rounding of its int8 grids.
    with torch.no_grad():
        expected = tiny_network(codes)[:, 0]  # [B, N, V] of level 0
    logits = model.level_logits(states + model.level[0], 0).double() / LOGIT_UNITS
    assert (logits - expected.double()).abs().mean() < 0.05


def test_integer_frequencies_are_exact_and_every_symbol_codable():
    logits = torch.tensor([[0, -5000, 7, 7], [3, 3, 3, 3]])
    starts = interval_starts(logits, 16)
    widths = starts.diff(dim=-1)
    assert starts[:, 0].eq(0).all() and starts[:, -1].eq(2**16).all() and widths.min() >= 1
    assert widths[1].tolist() == [2**14] * 4 and widths[0, 2] == widths[0, 3] > widths[0, 0]
    assert torch.equal(EXP_TABLE[:2], torch.tensor([2**30, 1008687096]))  # round(2**30 exp(-1/16))


def test_sampling_is_seeded_batched_and_continues_prompts(tiny_prior):
    a = tiny_prior.sample(0.3, temperature=0.9, top_k=5, seed=7)
    b = tiny_prior.sample(0.3, temperature=0.9, top_k=5, seed=7)
    c = tiny_prior.sample(0.3, temperature=0.9, top_k=5, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    together = tiny_prior.sample(0.3, temperature=0.9, top_k=5, seed=7, streams=3)
    assert together.shape[0] == 3 and torch.equal(together[0], a[0]) and torch.equal(together[1], c[0])
    continued = tiny_prior.sample(0.2, seed=1, prompt=a)
    assert continued.shape[-1] == a.shape[-1] + 10 and torch.equal(continued[..., : a.shape[-1]], a)
    greedy = tiny_prior.sample(0.2, temperature=0, seed=1, streams=2)
    assert torch.equal(greedy[0], greedy[1])
    for bad in ({"seconds": 0.0}, {"seconds": 1, "streams": 0}, {"seconds": 1, "num_levels": 9}):
        with pytest.raises(ValueError):
            tiny_prior.sample(**bad)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**16),
    frames=st.integers(0, 60),
    levels=st.integers(1, 4),
    segment=st.integers(1, 70),
    group=st.integers(1, 5),
)
def test_entropy_coding_round_trip_on_random_streams_and_segment_layouts(
    tiny_prior, seed, frames, levels, segment, group
):
    codes = torch.from_numpy(np.random.default_rng(seed).integers(0, 64, (1, levels, frames)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prior_api, "SEGMENT_FRAMES", segment)
        payload = tiny_prior.entropy_encode(codes)
    with pytest.MonkeyPatch.context() as patch:  # the decoder reads the layout from the payload
        patch.setattr(prior_api, "DECODE_GROUP", group)
        assert torch.equal(tiny_prior.entropy_decode(payload, levels, frames), codes)


def test_entropy_coding_costs_what_cross_entropy_says_and_ignores_thread_counts(tiny_codec, tiny_prior):
    wav, rate = sf.read(Path(__file__).parent / "data" / "arctic_a0009.wav", dtype="float32")
    codes = tiny_codec.encode(wav, rate).codes
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = tiny_prior.entropy_encode(codes)
        torch.set_num_threads(2)
        two = tiny_prior.entropy_encode(codes)
    finally:
        torch.set_num_threads(threads)
    assert one == two
    segments = -(-codes.shape[-1] // prior_api.SEGMENT_FRAMES)
    coded_bits = 8 * (len(one) - 12 - 2 * segments)  # less header and segment table
    ideal = tiny_prior.cross_entropy(codes) * codes.numel()
    assert ideal <= coded_bits <= ideal + 40 * segments  # the coder's flushed state, per segment


def test_entropy_coding_real_tokens_and_rejects_damage(tiny_codec, tiny_prior):
    wav, rate = sf.read(Path(__file__).parent / "data" / "arctic_a0009.wav", dtype="float32")
    codes = tiny_codec.encode(wav, rate).codes
    payload = tiny_prior.entropy_encode(codes)
    assert torch.equal(tiny_prior.entropy_decode(payload, codes.shape[1], codes.shape[2]), codes)
    rng = np.random.default_rng(0)
    for _ in range(30):
        damaged = bytearray(payload)
        damaged[int(rng.integers(0, len(damaged)))] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(CorruptStreamError):
            tiny_prior.entropy_decode(bytes(damaged), codes.shape[1], codes.shape[2])
    for cut in (1, 3, len(payload) - 8, len(payload) - 3):
        with pytest.raises(CorruptStreamError):
            tiny_prior.entropy_decode(payload[:cut], codes.shape[1], codes.shape[2])
    with pytest.raises(CorruptStreamError):
        tiny_prior.entropy_decode(payload + b"\0", codes.shape[1], codes.shape[2])
    zero_segments = payload[:10] + b"\0\0" + payload[12:]
    with pytest.raises(CorruptStreamError, match="segments of 0 frames"):
        tiny_prior.entropy_decode(zero_segments, codes.shape[1], codes.shape[2])
    other = TokenPrior(tiny_prior.model, "prior:ffffffffffff")
    with pytest.raises(CorruptStreamError, match="prior"):
        other.entropy_decode(payload, codes.shape[1], codes.shape[2])


def test_codec_files_entropy_coded_with_the_prior(tiny_codec, tiny_prior, tiny_network):
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
        IntegerPrior(dataclasses.replace(tiny_prior.config, codec_model_id="vqcodec-tiny:other")), "prior:x"
    )
    assert "vqcodec-tiny:other" in stranger.mismatch(tiny_codec) and tiny_prior.mismatch(tiny_codec) is None
    for call in (lambda: tiny_codec.to_bytes(encoded, stranger), lambda: tiny_codec.from_bytes(data, stranger)):
        with pytest.raises(CodecError, match="tokens of vqcodec-tiny:other"):
            call()
    wider = TokenPrior(
        IntegerPrior(dataclasses.replace(tiny_prior.config, codebook_size=2 * tiny_prior.codebook_size)), "prior:y"
    )
    assert "do not fit" in wider.mismatch(tiny_codec)


def test_saved_prior_loads_to_the_same_integers(tiny_prior, tmp_path):
    tiny_prior.save(tmp_path / "prior.safetensors")
    loaded = TokenPrior.load(tmp_path / "prior.safetensors")
    assert loaded.config == tiny_prior.config
    for name, tensor in tiny_prior.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    codes = tiny_prior.sample(0.5, seed=2)
    assert loaded.entropy_encode(codes)[6:] == tiny_prior.entropy_encode(codes)[6:]  # identity aside


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_integer_prior_on_a_gpu_gives_the_cpus_integers(tiny_prior):
    codes = torch.randint(0, tiny_prior.codebook_size, (2, 4, 50))
    cpu = tiny_prior.model.frame_states(codes)
    gpu = IntegerPrior(tiny_prior.config)
    gpu.load_state_dict(tiny_prior.model.state_dict())
    gpu = gpu.cuda()
    assert torch.equal(gpu.frame_states(codes.cuda()).cpu(), cpu)


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
        "--hidden",
        "48",
        "--dilations",
        "1,2,4",
        "--depth_hidden",
        "40",
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
    source = tmp_path / "first"  # its state file holds the float network
    # A zero learning rate leaves the weights where they started: those of the source prior.
    train_prior.main(
        args + ["--run_dir", str(tmp_path / "warm"), "--steps", "1", "--learning_rate", "0", "--init_from", str(source)]
    )
    start = TokenPrior.load(source / "last.safetensors").model.state_dict()
    warm = TokenPrior.load(tmp_path / "warm" / "last.safetensors").model.state_dict()
    assert all(torch.equal(start[k], warm[k]) for k in start)
    with pytest.raises(SystemExit, match="another shape"):
        train_prior.main(
            args + ["--run_dir", str(tmp_path / "wide"), "--steps", "1", "--dim", "64", "--init_from", str(source)]
        )


def test_integer_prior_ignores_reduced_float32_matmul_precision(tiny_prior):
    """A process that allows TF32 or bf16 float32 matmuls (a server tuning its GPU, say) must not
    change the prior's integers."""
    codes = torch.randint(0, tiny_prior.codebook_size, (2, 4, 30), generator=torch.Generator().manual_seed(3))
    exact = tiny_prior.model.frame_states(codes)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert torch.equal(tiny_prior.model.frame_states(codes), exact)
    finally:
        torch.set_float32_matmul_precision(before)


def test_a_learned_step_that_crossed_zero_acts_as_its_magnitude(tiny_network, tiny_prior):
    """A large update can push an LSQ step below 0; the network and its integer export use |step|."""
    flipped = copy.deepcopy(tiny_network)
    with torch.no_grad():
        for layer in (flipped.heads[0], flipped.depth.out):
            layer.step.neg_()
    exported = TokenPrior.from_network(flipped).model.state_dict()
    for name, tensor in tiny_prior.model.state_dict().items():
        assert torch.equal(exported[name], tensor), name
