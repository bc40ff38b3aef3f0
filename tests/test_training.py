"""Training on tiny configs: the model learns, codebooks fill, resume is exact, DDP ranks agree."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch
from tiny import TINY_MODEL, run_two_processes, tiny_config, tiny_run

from codec import Codec
from codec.model import build_model
from codec.usage import codebook_usage
from training.data import load_validation, read_manifest
from training.train import TrainConfig, state_digest, warm_start


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_training_reduces_loss(tiny_corpus, tmp_path):
    tiny_run(tiny_corpus, tmp_path, steps=300)
    records = [r for r in read_metrics(tmp_path) if "mel/loss" in r]

    def ratio(*names):
        start = sum(r[n] for r in records[:4] for n in names) / 4
        end = sum(r[n] for r in records[-4:] for n in names) / 4
        return end / start

    # Measured at seed 0: mel 0.68, head 0.62, phase 0.66, all four 0.68 of their starting values
    # (mel alone fell to under 0.6 before the head and phase losses shared the gradient).
    reconstruction = ("mel/loss", "stft/loss", "head/loss", "phase/loss")
    assert ratio(*reconstruction) < 0.75, [round(ratio(n), 3) for n in reconstruction]
    for name in ("mel/loss", "head/loss", "phase/loss"):  # straight-through gradients reach the encoder
        assert ratio(name) < 0.8, (name, ratio(name))


@pytest.mark.slow
def test_tiny_training_keeps_codebooks_in_use(tiny_corpus, tmp_path):
    # The quantizer's restarts under the spectral losses alone. With the head and phase losses as
    # well the tiny model's 4 x 64 codes fall to 30-53% in use after 300 steps on these synthetic
    # tones (the default model keeps 88-99% on 12 min of held-out speech: README, "Quality").
    tiny_run(tiny_corpus, tmp_path, steps=300, lambdas={**TrainConfig().lambdas, "head": 0.0, "phase": 0.0})
    codec = Codec.load(tmp_path / "last.safetensors")
    clips = load_validation(read_manifest(tiny_corpus, "train"), 16000, 60)
    codes = torch.cat([codec.model.encode(c) for c in clips], dim=-1)
    usage = codebook_usage(codes, codec.config.quantizer.codebook_size)
    assert all(level.used_fraction > 0.5 for level in usage), usage  # restarts keep codes alive


@pytest.mark.slow
def test_resume_is_exact(tiny_corpus, tmp_path):
    tiny_run(tiny_corpus, tmp_path / "straight", steps=30)
    tiny_run(tiny_corpus, tmp_path / "resumed", steps=15)
    tiny_run(tiny_corpus, tmp_path / "resumed", steps=30)
    a = Codec.load(tmp_path / "straight" / "last.safetensors").model
    b = Codec.load(tmp_path / "resumed" / "last.safetensors").model
    assert state_digest(a) == state_digest(b)
    for (name, x), (_, y) in zip(sorted(a.state_dict().items()), sorted(b.state_dict().items())):
        assert torch.equal(x, y), name


@pytest.mark.slow
def test_two_process_ddp_ranks_agree(tiny_corpus, tmp_path):
    result = run_two_processes(
        "training.train",
        *f"--manifest {tiny_corpus} --run_dir {tmp_path} --steps 12 --batch_size 2 --val_every 1000".split(),
        *("--log_every", "4", "--model", json.dumps(TINY_MODEL)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d) step 12 weights sha256 ([0-9a-f]+)", result.stderr))
    assert set(digests) == {"0", "1"}, result.stderr[-3000:]
    assert digests["0"] == digests["1"]
    # and the run really trained: the saved weights differ from a fresh initialisation
    assert (tmp_path / "state.rank1.safetensors").exists()


@pytest.mark.slow
def test_export_ships_half_precision_weights_and_a_card_from_the_runs_records(tiny_corpus, tmp_path, monkeypatch):
    from training import export

    tiny_run(tiny_corpus, tmp_path / "first", steps=10)
    tiny_run(tiny_corpus, tmp_path / "second", steps=6, init_from=str(tmp_path / "first" / "last.safetensors"))
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "summary.csv").write_text("family,setting,pesq_wb\nours,1.5 kbps,1.234\n")
    (evaluation / "usage.csv").write_text("level,used_fraction,perplexity\n0,0.9,50.0\n")
    assets = tmp_path / "assets"
    monkeypatch.setattr(export, "ASSETS", assets)
    monkeypatch.setattr(export, "BUNDLED_CHECKPOINT", assets / "codec.safetensors")
    common = f"--run {tmp_path / 'second'} --checkpoint last.safetensors --manifest {tiny_corpus}".split()
    first = f"{tmp_path / 'first'}:last.safetensors"
    export.main([*common, "--earlier", "100:0.5:older stages", "--init-run", first, "--eval", str(evaluation)])

    shipped = Codec.load(assets / "codec.safetensors")
    trained = Codec.load(tmp_path / "second" / "last.safetensors")
    assert (assets / "codec.safetensors").stat().st_size < 0.6 * (
        tmp_path / "second" / "last.safetensors"
    ).stat().st_size
    for (name, x), (_, y) in zip(
        sorted(shipped.model.state_dict().items()), sorted(trained.model.state_dict().items())
    ):
        assert torch.allclose(x.float(), y.float(), atol=1e-2, rtol=1e-2), name
    card = (assets / "MODEL_CARD.md").read_text()
    assert f"# Model card: {shipped.model_id}" in card
    assert (
        "trained 116 steps (100 in older stages, then 10 in first, then 6 in second, each warm-started from the "
        "one before)" in card
    )
    with pytest.raises(SystemExit, match="STEPS:HOURS:LABEL"):
        export.main([*common, "--earlier", "many"])
    assert "| ours | 1.5 kbps | 1.234 |" in card and "| 0 | 0.9 | 50.0 |" in card
    assert "| synthetic | speech | CC0 |" in card


def test_decoder_fine_tuning_keeps_the_tokens_and_trains_the_gan(tiny_corpus, tmp_path):
    tiny_run(tiny_corpus, tmp_path / "base", steps=6)
    base = Codec.load(tmp_path / "base" / "last.safetensors")
    tiny_run(
        tiny_corpus,
        tmp_path / "tuned",
        steps=4,
        init_from=str(tmp_path / "base" / "last.safetensors"),
        freeze="encoder,quantizer",
        adversarial=True,
        adversarial_items=2,
        log_every=2,
    )
    tuned = Codec.load(tmp_path / "tuned" / "last.safetensors")
    before, after = base.model.state_dict(), tuned.model.state_dict()
    # Encoder weights and codebooks (EMA statistics included) are untouched; the decoder moved.
    for name, tensor in before.items():
        if name.startswith(("encoder.", "quantizer.")):
            assert torch.equal(tensor, after[name]), name
    assert any(not torch.equal(t, after[n]) for n, t in before.items() if n.startswith("decoder."))
    records = read_metrics(tmp_path / "tuned")
    assert all(r["adv/loss"] > 0 and r["feat/loss"] > 0 and r["disc/loss"] > 0 for r in records)
    wav = torch.randn(1, 1, 8000) * 0.1
    assert torch.equal(base.model.encode(wav), tuned.model.encode(wav))


@pytest.mark.parametrize("spec", ["encoder,quantizer,decoder", "encoder,bogus"])
def test_freeze_rejects_unknown_or_all_parts(spec):
    from training.train import frozen_parts

    with pytest.raises(SystemExit):
        frozen_parts(spec)


@pytest.mark.slow
def test_export_retargets_the_prior_only_to_a_codec_with_the_same_tokens(tiny_corpus, tmp_path, monkeypatch):
    from tiny import tiny_prior_config

    from codec.prior import PriorNet
    from codec.prior_api import TokenPrior
    from training import export

    tiny_run(tiny_corpus, tmp_path / "base", steps=6)
    tiny_run(
        tiny_corpus,
        tmp_path / "tuned",
        steps=3,
        init_from=str(tmp_path / "base" / "last.safetensors"),
        freeze="encoder,quantizer",
    )
    tiny_run(tiny_corpus, tmp_path / "moved", steps=3, init_from=str(tmp_path / "base" / "last.safetensors"))
    base = Codec.load(tmp_path / "base" / "last.safetensors")
    prior_run = tmp_path / "prior"
    prior_run.mkdir()
    (prior_run / "metrics.jsonl").write_text("")
    config = tiny_prior_config(
        export.half_precision_id(tmp_path / "base" / "last.safetensors"),
        num_levels=base.model.config.quantizer.num_levels,
        codebook_size=base.model.config.quantizer.codebook_size,
    )
    TokenPrior.from_network(PriorNet(config), "prior:tiny").save(prior_run / "best.safetensors")
    (prior_run / "state.safetensors").write_bytes((tmp_path / "base" / "state.safetensors").read_bytes())
    assets = tmp_path / "assets"
    monkeypatch.setattr(export, "ASSETS", assets)
    monkeypatch.setattr(export, "BUNDLED_CHECKPOINT", assets / "codec.safetensors")
    monkeypatch.setattr(export, "BUNDLED_PRIOR", assets / "prior.safetensors")

    def ship(run: str) -> None:
        export.main(
            [
                "--run",
                str(tmp_path / run),
                "--checkpoint",
                "last.safetensors",
                "--manifest",
                str(tiny_corpus),
                "--prior-run",
                str(prior_run),
                "--prior-fitted-to",
                str(tmp_path / "base" / "last.safetensors"),
            ]
        )

    ship("tuned")
    shipped, prior = Codec.load(assets / "codec.safetensors"), TokenPrior.load(assets / "prior.safetensors")
    assert prior.codec_model_id == shipped.model_id != config.codec_model_id
    assert "the last stage kept the encoder and quantizer frozen" in (assets / "MODEL_CARD.md").read_text()
    with pytest.raises(SystemExit, match="differs between the codecs"):
        ship("moved")


def test_half_precision_id_hashes_the_config_as_stored(tmp_path):
    # A checkpoint whose config holds fields this version no longer writes (as the bundled
    # model's does) keeps the id it shipped with.
    from conftest import make_tiny_codec

    from codec.checkpoint import read_checkpoint, save_checkpoint
    from training import export

    make_tiny_codec().save(tmp_path / "new.safetensors")
    checkpoint = read_checkpoint(tmp_path / "new.safetensors", "codec")
    config = json.loads(json.dumps(checkpoint.config))
    config["decoder"].update(phase="harmonic", phase_group=4, linear_skip=True)
    old = tmp_path / "old.safetensors"
    save_checkpoint(old, "codec", config, checkpoint.tensors)
    shipped = tmp_path / "shipped.safetensors"
    save_checkpoint(shipped, "codec", config, checkpoint.tensors, half=True)
    assert export.half_precision_id(old) == f"{config['name']}:{read_checkpoint(shipped, 'codec').digest[:12]}"


def test_level_dropout_override_reaches_the_model_and_its_checkpoint(tiny_corpus, tmp_path):
    """--level_dropout 1.0 trains every number of levels equally and is recorded with the weights."""
    tiny_run(tiny_corpus, tmp_path / "uniform", steps=2, level_dropout=1.0)
    codec = Codec.load(tmp_path / "uniform" / "last.safetensors")
    assert codec.config.quantizer.level_dropout == 1.0
    assert json.loads((tmp_path / "uniform" / "config.json").read_text())["model"]["quantizer"]["level_dropout"] == 1.0
    # A warm start with another level dropout keeps the codebooks (only the sampling of levels differs).
    base = Codec.load(tmp_path / "uniform" / "last.safetensors").model
    fresh = build_model(
        dataclasses.replace(base.config, quantizer=dataclasses.replace(base.config.quantizer, level_dropout=0.25))
    )
    warm_start(fresh, str(tmp_path / "uniform" / "last.safetensors"), announce=False)
    for name, tensor in base.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    quantizer = codec.model.quantizer.train()
    k = codec.config.quantizer.num_levels
    torch.manual_seed(0)
    levels = quantizer._levels_per_item(20_000, None, torch.device("cpu"))
    assert abs(float((levels == k).float().mean()) - 1 / k) < 0.02  # 0.5 would give 0.5 + 0.5 / k
    assert abs(float((levels == 1).float().mean()) - 1 / k) < 0.02


def test_stoi_loss_is_named_weighted_and_logged_when_switched_on(tiny_corpus, tmp_path):
    tiny_run(tiny_corpus, tmp_path / "off", steps=2, log_every=1)
    tiny_run(tiny_corpus, tmp_path / "on", steps=2, log_every=1, lambdas={**TrainConfig().lambdas, "stoi": 2.0})
    off = [r for r in read_metrics(tmp_path / "off") if "loss" in r]
    on = [r for r in read_metrics(tmp_path / "on") if "loss" in r]
    assert off and "stoi/loss" not in off[0]  # weight 0: not computed
    assert on and all(0 < r["stoi/loss"] <= 2 for r in on)


@pytest.mark.slow
def test_pesq_and_si_sdr_losses_are_logged_when_switched_on(tiny_corpus, tmp_path):
    tiny_run(tiny_corpus, tmp_path, steps=2, log_every=1, lambdas={**TrainConfig().lambdas, "pesq": 1.0, "sisdr": 0.05})
    records = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert records and all(r["pesq/loss"] > 0 and -60 <= r["sisdr/loss"] <= 30 for r in records)


@pytest.mark.slow
def test_a_step_with_non_finite_gradients_is_skipped_not_applied(tiny_corpus, tmp_path, monkeypatch):
    from training import train as train_module

    calls = {"n": 0}
    total = train_module.Losses.total

    def poisoned_total(self, losses):
        calls["n"] += 1
        value = total(self, losses)
        return value * float("nan") if calls["n"] in (3, 4) else value

    monkeypatch.setattr(train_module.Losses, "total", poisoned_total)
    tiny_run(tiny_corpus, tmp_path, steps=6, log_every=1)
    records = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 2, 2, 2]
    weights = Codec.load(tmp_path / "last.safetensors").model.state_dict()
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_refresh_eval_replaces_only_the_cards_evaluation_tables(tmp_path, monkeypatch):
    from training import export

    card = "\n".join(
        [
            "# Model card: m",
            "",
            "- trained 5 steps",
            "",
            "## Evaluation (held-out speech, `python -m training.evaluate`)",
            "",
            "| family | pesq_wb |",
            "|---|---|",
            "| ours | 1.0 |",
            "",
            "## Codebook usage on the evaluation files",
            "",
            "| level | used |",
            "|---|---|",
            "| 1 | 0.5 |",
            "",
            "## Token prior",
            "",
            "| setting | bits |",
            "|---|---|",
            "| 1.5 | 6.1 |",
            "",
        ]
    )
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "MODEL_CARD.md").write_text(card)
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "summary.csv").write_text("family,pesq_wb\nours,2.0\nopus,1.5\n")
    (folder / "usage.csv").write_text("level,used\n1,0.9\n")
    monkeypatch.setattr(export, "ASSETS", assets)
    export.main(["--refresh-eval", str(folder)])
    new = (assets / "MODEL_CARD.md").read_text()
    assert "| ours | 2.0 |\n| opus | 1.5 |" in new and "| ours | 1.0 |" not in new
    assert "| 1 | 0.9 |" in new and "| 1 | 0.5 |" not in new
    assert "| 1.5 | 6.1 |" in new and "- trained 5 steps" in new  # the rest as it was
    (folder / "usage.csv").unlink()
    with pytest.raises(SystemExit, match="usage.csv"):
        export.main(["--refresh-eval", str(folder)])


def test_bf16_gan_steps_every_other_step_on_crops_and_resume_exactly(tiny_corpus, tmp_path):
    options = dict(
        precision="bf16",
        adversarial=True,
        adversarial_items=2,
        adversarial_seconds=0.25,
        adversarial_every=2,
        augment=0.5,
        log_every=1,
    )
    tiny_run(tiny_corpus, tmp_path / "straight", steps=6, **options)
    tiny_run(tiny_corpus, tmp_path / "resumed", steps=3, **options)
    tiny_run(tiny_corpus, tmp_path / "resumed", steps=6, **options)
    records = [r for r in read_metrics(tmp_path / "straight") if "loss" in r]
    # The discriminators run on steps 0, 2, 4 (logged as steps 1, 3, 5) and nowhere else.
    assert [r["step"] for r in records if "disc/loss" in r] == [1, 3, 5]
    assert all(math.isfinite(r["loss"]) and r["skipped_steps"] == 0 for r in records)
    a = Codec.load(tmp_path / "straight" / "last.safetensors").model.state_dict()
    b = Codec.load(tmp_path / "resumed" / "last.safetensors").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_autocast_runs_the_convolutions_in_bf16_and_keeps_losses_in_float32(tiny_corpus):
    from training.step import autocast
    from training.train import build_trainer, model_config_for

    config = TrainConfig(manifest=str(tiny_corpus), model=TINY_MODEL, precision="bf16")
    trainer = build_trainer(config, model_config_for(config), torch.device("cpu"))
    conv = next(m for m in trainer.model.decoder.modules() if isinstance(m, torch.nn.Conv1d))
    seen = []
    hook = conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    result = trainer.step(torch.randn(2, 1, 4000) * 0.1, 0)
    hook.remove()
    assert seen == [torch.bfloat16]
    assert result.applied and all(v.dtype == torch.float32 for v in result.losses.values())
    with pytest.raises(ValueError):
        autocast(torch.device("cpu"), "fp16")


def test_augment_is_seeded_changes_the_spectrum_and_keeps_the_length():
    from training.data import Augment

    wav = torch.randn(16000) * 0.1
    first = Augment(1.0)(wav, torch.Generator().manual_seed(3))
    again = Augment(1.0)(wav, torch.Generator().manual_seed(3))
    other = Augment(1.0)(wav, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other) and first.shape == wav.shape
    assert not torch.allclose(first, wav, atol=1e-3)
    spectrum_ratio = torch.fft.rfft(first).abs() / torch.fft.rfft(wav).abs()
    assert spectrum_ratio[100:].std() > 0.05  # not a plain gain
    assert torch.equal(Augment(0.0)(wav, torch.Generator()), wav)


def test_validation_reports_pesq_stoi_and_a_quality_score(tiny_corpus):
    from training.validate import STOI_WEIGHT, validate

    model = build_model(tiny_config())
    clips = load_validation(read_manifest(tiny_corpus, "train"), 16000, 4)
    result = validate(model, clips)
    pesq, stoi = result["pesq_wb"], result["stoi"]
    assert set(pesq) == set(stoi) == set(result["mel_distance"])
    expected = sum(pesq.values()) / len(pesq) + STOI_WEIGHT * sum(stoi.values()) / len(stoi)
    assert result["quality"] == pytest.approx(expected, abs=1e-3)
    # Standard errors over the clips: the spread of the per-clip scores over sqrt(clips).
    import numpy as np

    from training.metrics import stoi as stoi_of

    se = result["standard_error"]
    assert set(se["pesq_wb"]) == set(pesq) and all(v > 0 for v in se["pesq_wb"].values())
    levels = model.config.levels_for_bitrate(3.0)
    per_clip = []
    for wav in clips:
        decoded = model.decode(model.encode(wav, levels))[..., : wav.shape[-1]].float()
        per_clip.append(stoi_of(wav.reshape(-1).double().numpy(), decoded.reshape(-1).detach().double().numpy()))
    assert se["stoi"]["3.0kbps"] == pytest.approx(np.std(per_clip, ddof=1) / np.sqrt(len(per_clip)), abs=2e-4)
