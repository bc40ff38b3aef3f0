"""The GPU burst round trip, run on CPU for a few steps: pack a run, train from the pack, merge."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_run

from codec import Codec
from training import burst


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("opusenc") is None, reason="needs opusenc (apt-get install opus-tools)")
def test_pack_run_merge_sends_only_changed_weights_and_brings_training_back(tiny_corpus, tmp_path, monkeypatch):
    base_run, run = tmp_path / "base", tmp_path / "run"
    tiny_run(tiny_corpus, base_run, batch_size=2, steps=2)
    base = base_run / "last.safetensors"
    tiny_run(
        tiny_corpus,
        run,
        batch_size=2,
        steps=2,
        init_from=str(base),
        freeze="encoder,quantizer",
        adversarial=True,
        adversarial_items=2,
    )
    monkeypatch.setattr(burst, "WHEELS", ())  # no downloads in tests
    monkeypatch.setattr(burst, "download_wheels", lambda folder: folder.mkdir(parents=True))
    pack = tmp_path / "pack"
    burst.main(["pack", "--run", str(run), "--out", str(pack), "--base", str(base), "--kbps", "24"])

    sent = load_file(pack / "weights.safetensors")
    assert sent and all(name.startswith("decoder.") for name in sent)  # frozen parts equal the base's
    assert all(t.dtype == torch.float16 for t in sent.values() if t.is_floating_point())
    entries = [json.loads(line) for line in (pack / "manifest.jsonl").read_text().splitlines()]
    assert entries and {e["kind"] for e in entries} <= {"speech", "music"}
    assert all((pack / e["path"]).stat().st_size > 0 for e in entries)

    out = tmp_path / "out"
    burst.main(
        [
            "run",
            "--pack",
            str(pack),
            "--minutes",
            "0.02",
            "--batch-size",
            "2",
            "--log-every",
            "1",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
            "--base",
            str(base),
        ]
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and all("disc/loss" in r for r in records if "loss" in r)
    returned = load_file(out / "weights.safetensors")
    assert set(returned) >= set(sent) and any(not torch.equal(returned[k], sent[k]) for k in sent)

    burst.main(["merge", str(out), "--run", str(run), "--base", str(base)])
    merged = Codec.load(tmp_path / "run_burst" / "init.safetensors").model.state_dict()
    original = Codec.load(base).model.state_dict()
    for name, tensor in merged.items():
        if name.startswith(("encoder.", "quantizer.")):
            assert torch.equal(tensor, original[name]), name
    assert torch.equal(merged["decoder.head.proj.weight"].half(), returned["decoder.head.proj.weight"])
    assert load_file(tmp_path / "run_burst" / "discriminator.safetensors")
