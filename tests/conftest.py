"""Shared fixtures: tiny seeded models and a small synthetic corpus, no network, no weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from tiny import tiny_config

from codec import Codec, build_model


def harmonic_signal(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """A voiced-speech-like test signal: a gliding harmonic tone with a syllable envelope + noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = rng.uniform(90, 250) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
    noise = rng.normal(0, 0.05, t.shape)
    x = envelope * voice * 0.2 + noise * envelope
    return (x / np.abs(x).max() * 0.8).astype(np.float32)


# Property tests of the pure-Python coders: enough examples to find edge cases, no deadline.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)

SPEECH = Path(__file__).parent / "data" / "arctic_a0009.wav"  # 3.3 s of a real voice


def assert_gradient_step_lowers(loss_fn, noise: float, step: float) -> None:
    """A differentiable loss on 2 s of noisy speech passes finite gradients, and a small step
    against them lowers it."""
    wav, rate = sf.read(SPEECH, dtype="float32")
    x = torch.from_numpy(wav[: 2 * rate])[None, None]
    torch.manual_seed(0)
    y = (x + noise * torch.randn_like(x)).requires_grad_()
    loss = loss_fn(y, x)
    loss.backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = y - step * y.grad / y.grad.abs().max()
    assert float(loss_fn(stepped, x)) < float(loss.detach())


def make_tiny_codec() -> Codec:
    """A seeded tiny codec whose codebooks one training pass initialised from harmonic signals."""
    torch.manual_seed(0)
    model = build_model(tiny_config())
    # The pitch head starts unvoiced; a zero voicing bias makes the tests see a running phase
    # that depends on the input, as a trained head's does.
    torch.nn.init.zeros_(model.decoder.head.pitch.net[-1].bias)
    model.train()
    with torch.no_grad():  # one training pass initialises the codebooks from data
        model(torch.from_numpy(np.stack([harmonic_signal(1.0, 16000, s) for s in range(4)]))[:, None])
    return Codec(model.eval(), "vqcodec-tiny:test")


@pytest.fixture(scope="session")
def tiny_codec() -> Codec:
    return make_tiny_codec()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A manifest of synthetic clips: 8 train (speech and music kinds), 2 val."""
    root = tmp_path_factory.mktemp("corpus")
    entries = []
    for index in range(10):
        split = "val" if index >= 8 else "train"
        kind = "music" if index % 4 == 3 else "speech"
        path = Path(split) / kind / f"clip{index}.flac"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        audio = harmonic_signal(1.5 + 0.25 * index, 16000, index)
        sf.write(root / path, audio, 16000, subtype="PCM_16")
        entries.append(
            {
                "path": str(path),
                "source_package": "synthetic",
                "original_path": str(path),
                "license": "CC0",
                "duration": len(audio) / 16000,
                "split": split,
                "kind": kind,
                "group": f"g{index}",
                "sample_rate": 16000,
            }
        )
    (root / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return root / "manifest.jsonl"


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_codec: Codec, tmp_path_factory) -> Path:
    """The tiny codec saved as a checkpoint file, for code that loads models by path (the server)."""
    path = tmp_path_factory.mktemp("checkpoints") / "tiny.safetensors"
    tiny_codec.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_prior_checkpoint(tiny_checkpoint: Path, tmp_path_factory) -> Path:
    """A tiny random prior over the tiny codec's tokens (as the codec loads it from tiny_checkpoint)."""
    from tiny import tiny_prior_config

    from codec.prior import PriorNet
    from codec.prior_api import TokenPrior

    torch.manual_seed(0)
    config = tiny_prior_config(Codec.load(tiny_checkpoint).model_id)
    path = tmp_path_factory.mktemp("checkpoints") / "tiny-prior.safetensors"
    TokenPrior.from_network(PriorNet(config), "prior:tiny").save(path)
    return path
