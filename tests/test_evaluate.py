"""The evaluation harness: SI-SDR, delay compensation, Ogg/Opus parsing, and a tiny end-to-end run."""

from __future__ import annotations

import csv
import shlex
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import harmonic_signal
from tiny import tiny_config

from codec import Codec, build_model
from training import evaluate
from training.baselines import ogg_packets, opus_audio_packets, opus_bandwidths
from training.data import read_manifest
from training.metrics import align, find_lag, score, si_sdr, system_delay


def test_si_sdr_of_identical_signals_is_large_and_scale_invariant():
    x = harmonic_signal(1.0, 16000, 0)
    assert si_sdr(x, x) > 100
    assert si_sdr(x, 0.3 * x) > 100


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_si_sdr_matches_the_snr_of_added_noise(snr_db):
    rng = np.random.default_rng(1)
    x = harmonic_signal(2.0, 16000, 1).astype(np.float64)
    x -= x.mean()
    noise = rng.normal(size=x.shape)
    noise -= noise.mean()
    noise *= np.sqrt(np.sum(x**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
    assert si_sdr(x, x + noise) == pytest.approx(snr_db, abs=0.2)


@pytest.mark.parametrize("lag", [0, 37, -250, 1600])
def test_delay_compensation_recovers_a_known_shift(lag):
    reference = harmonic_signal(1.5, 16000, 2)
    # A late output (lag > 0) starts with `lag` samples of something else; an early one lost its start.
    if lag >= 0:
        output = np.concatenate([np.zeros(lag, np.float32), reference])
    else:
        output = reference[-lag:]
    output = 0.7 * output + np.random.default_rng(0).normal(0, 0.01, output.shape).astype(np.float32)
    assert find_lag(reference, output, 1600) == lag
    aligned, found = align(reference, output)
    assert found == lag and len(aligned) == len(reference)
    assert si_sdr(reference[1600:-1600], aligned[1600:-1600]) > 15  # the added noise is ~22 dB down


def test_silent_output_gets_no_lag():
    reference = harmonic_signal(0.5, 16000, 3)
    aligned, lag = align(reference, np.zeros(len(reference) + 100, np.float32))
    assert lag == 0 and len(aligned) == len(reference)


def _vocoded(signal: np.ndarray, seed: int) -> np.ndarray:
    """The signal's short-time magnitudes with random phases: what a vocoder's output shares
    with its input (no waveform match, so per-file waveform correlation is noise)."""
    spec = torch.stft(torch.from_numpy(signal), 512, 128, window=torch.hann_window(512), return_complex=True)
    phase = torch.rand(spec.shape, generator=torch.Generator().manual_seed(seed)) * 2 * torch.pi
    return torch.istft(
        torch.polar(spec.abs(), phase), 512, 128, window=torch.hann_window(512), length=len(signal)
    ).numpy()


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    """A harmonic signal switched on and off at random (syllable-like energy envelope)."""
    rng = np.random.default_rng(seed)
    x = harmonic_signal(seconds, 16000, seed)
    gate = np.repeat(rng.random(int(seconds * 10) + 1) < 0.6, 1600)[: len(x)]
    return (x * gate).astype(np.float32)


@pytest.mark.parametrize("lag", [0, 270, -90])
def test_system_delay_is_found_for_vocoders_and_waveform_codecs(lag):
    references = [_speechlike(2.0, seed) for seed in range(6)]

    def delayed(x):
        return np.concatenate([np.zeros(lag, np.float32), x]) if lag >= 0 else x[-lag:]

    waveform = [(r, delayed(0.8 * r)) for r in references]
    assert system_delay(waveform, 1600) == lag
    vocoded = [(r, delayed(_vocoded(r, seed))) for seed, r in enumerate(references)]
    assert abs(system_delay(vocoded, 1600) - lag) <= 32  # one envelope frame
    # Per-file waveform correlation scatters a vocoder's lag far from the truth.
    assert max(abs(find_lag(r, o, 1600) - lag) for r, o in vocoded) > 32


def _ogg_page(packets: list[bytes]) -> bytes:
    lacing = b""
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    header = b"OggS" + bytes(2) + bytes(20) + bytes([len(lacing)])
    return header + lacing + b"".join(packets)


def test_opus_bandwidth_is_read_from_the_toc_bytes():
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 16000, 0, 0)
    silk_wb, celt_fb = bytes([9 << 3]) + bytes(30), bytes([31 << 3]) + bytes(300)  # 300 > 255: two lacing values
    data = _ogg_page([head]) + _ogg_page([b"OpusTags" + bytes(8)]) + _ogg_page([silk_wb, silk_wb, celt_fb])
    assert [len(p) for p in ogg_packets(data)] == [len(head), 16, 31, 31, 301]
    assert opus_bandwidths(opus_audio_packets(data)) == {"SILK WB": 2, "CELT FB": 1}


def load_16k(path):
    audio = torch.from_numpy(evaluate.load_audio(str(path)))
    return audio[None], 16000


def run_evaluation(checkpoint, out, options: str) -> None:
    """`training.evaluate` on our codec alone with the given options (split as a shell would)."""
    evaluate.main([*shlex.split(options), "--checkpoint", str(checkpoint), "--no-baselines", "--out", str(out)])


def read_csv(path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def one_clip_folder(tmp_path, seconds: float = 2.0):
    """A folder holding one 16 kHz harmonic clip, a.wav."""
    clips = tmp_path / "clips"
    clips.mkdir()
    sf.write(clips / "a.wav", harmonic_signal(seconds, 16000, 7), 16000, subtype="PCM_16")
    return clips


def test_evaluation_runs_end_to_end_on_a_tiny_codec(tiny_codec, tiny_checkpoint, tmp_path, capsys):
    checkpoint = tiny_checkpoint
    clips = tmp_path / "clips"
    clips.mkdir()
    sf.write(clips / "a.wav", harmonic_signal(3.2, 16000, 5), 16000, subtype="PCM_16")
    sf.write(clips / "b.flac", harmonic_signal(1.0, 22050, 6), 22050)  # resampled to 16 kHz
    out = tmp_path / "eval"
    # The tiny codec has 4 levels of 6 bits: 1.5 and 3 kbps both mean all 4 levels, so 3 is skipped.
    run_evaluation(checkpoint, out, f"--folder {clips} --bitrates 0.6,1.5,3 --no-perceptual")

    rows = read_csv(out / "per_file.csv")
    assert sorted((r["file"], r["setting"]) for r in rows) == [
        ("a.wav", "0.6 kbps"),
        ("a.wav", "1.5 kbps"),
        ("b.flac", "0.6 kbps"),
        ("b.flac", "1.5 kbps"),
    ]
    for row in rows:
        assert float(row["kbps"]) > float(row["payload_kbps"])  # the header is charged too
        assert np.isfinite(float(row["si_sdr"])) and float(row["mel_distance"]) > 0
    summary = read_csv(out / "summary.csv")
    assert [(s["family"], s["setting"], s["files"]) for s in summary] == [
        ("ours", "0.6 kbps", "2"),
        ("ours", "1.5 kbps", "2"),
    ]
    assert float(summary[0]["payload_kbps"]) == pytest.approx(0.6)
    for name in ("rate_distortion.png", "spectrograms.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Codebook usage over both files with all 4 levels: the same counts as encoding them directly.
    usage = read_csv(out / "usage.csv")
    assert [int(u["level"]) for u in usage] == [0, 1, 2, 3]
    codes = torch.cat([tiny_codec.encode(*load_16k(clips / name)).codes for name in ("a.wav", "b.flac")], dim=-1)
    for u, row in zip(usage, codes[0]):
        assert float(u["used_fraction"]) == pytest.approx(len(row.unique()) / 64, abs=1e-4)
    printed = capsys.readouterr().out
    assert "PESQ-WB" in printed and "2 files" in printed and "codebook usage" in printed


def test_codebook_usage_can_cover_the_whole_split(tiny_codec, tiny_checkpoint, tiny_corpus, tmp_path, capsys):
    checkpoint = tiny_checkpoint
    out = tmp_path / "eval"
    run_evaluation(
        checkpoint,
        out,
        f"--manifest {tiny_corpus} --split train --kind music --bitrates 0.6 --usage-whole-split "
        "--examples 0 --no-perceptual",
    )
    assert (out / "summary.csv").exists() and not (out / "spectrograms.png").exists()
    usage = read_csv(out / "usage.csv")
    sets = list(dict.fromkeys(u["files"] for u in usage))
    assert len(sets) == 2 and sets[0].startswith("scored files") and sets[1].startswith("whole train split")
    # The whole split: all 8 training clips, speech and music, not just the 2 scored music clips.
    train = read_manifest(tiny_corpus, "train")
    assert len(train) == 8 and {c.kind for c in train} == {"speech", "music"}
    codes = torch.cat([tiny_codec.encode(*load_16k(c.path)).codes for c in train], dim=-1)
    whole = [u for u in usage if u["files"] == sets[1]]
    for u, row in zip(whole, codes[0], strict=True):
        assert float(u["used_fraction"]) == pytest.approx(len(row.unique()) / 64, abs=1e-4)
    assert "whole train split" in capsys.readouterr().out


def test_entropy_coded_settings_are_charged_their_real_files(
    tiny_codec, tiny_checkpoint, tiny_prior_checkpoint, tmp_path
):
    from codec import bitstream
    from codec.prior_api import TokenPrior

    clips = one_clip_folder(tmp_path)
    out = tmp_path / "eval"
    run_evaluation(
        tiny_checkpoint,
        out,
        f"--folder {clips} --bitrates 1.5 --entropy-bitrates 1.5 --prior {tiny_prior_checkpoint} "
        "--examples 0 --no-perceptual",
    )
    rows = {r["setting"]: r for r in read_csv(out / "per_file.csv")}
    packed, coded = rows["1.5 kbps"], rows["1.5 kbps + prior"]
    assert coded["family"] == "ours, entropy-coded"
    # The same codes, so the same audio and scores; only the bytes differ.
    for metric in ("pesq_wb", "stoi", "si_sdr", "mel_distance"):
        assert coded[metric] == packed[metric]
    codec, prior = Codec.load(tiny_checkpoint), TokenPrior.load(tiny_prior_checkpoint)
    audio, rate = load_16k(clips / "a.wav")
    encoded = codec.encode(audio, rate, bitrate=1.5)
    data = bitstream.write_stream(codec.header(encoded, coding="entropy"), payload=prior.entropy_encode(encoded.codes))
    assert int(coded["bytes"]) == len(data) != int(packed["bytes"])


def test_entropy_coded_settings_need_the_codecs_own_prior(tiny_codec, tiny_prior_checkpoint, tmp_path):
    other = tmp_path / "other.safetensors"
    torch.manual_seed(5)
    Codec(build_model(tiny_config()).eval(), "vqcodec-tiny:other").save(other)
    clips = one_clip_folder(tmp_path, seconds=1.0)
    with pytest.raises(SystemExit, match="models the tokens of"):
        run_evaluation(
            other,
            tmp_path / "e",
            f"--folder {clips} --bitrates 1.5 --entropy-bitrates 1.5 --prior {tiny_prior_checkpoint}",
        )


def test_a_known_delay_is_removed_as_is_and_others_are_measured(tmp_path):
    """Our codec declares its delay (0 by construction) instead of having it measured: a
    measurement can lock onto pitch pulses of a vocoder's output. Other systems are measured."""
    from training.baselines import OurCodec, System, SystemOutput

    class Late(System):
        family, setting, nominal_kbps = "test", "late", 1.0

        def __init__(self, delay):
            self.delay = delay

        def run(self, audio):
            return SystemOutput(np.concatenate([np.zeros(40, np.float32), audio]), 0, 0.0)

    path = tmp_path / "a.wav"
    sf.write(path, harmonic_signal(1.0, 16000, 3), 16000, subtype="PCM_16")
    files = [evaluate.AudioFile(str(path), "a.wav", 1.0)]
    declared, measured = Late(0), Late(None)
    measured.setting = "measured"
    delays = evaluate.calibrate_delays([declared, measured], files, 0.01)
    assert delays == {"test late": 0, "test measured": 40}
    assert OurCodec.delay == 0


def test_pitch_settings_are_charged_their_real_files_and_decoded_from_them(
    tiny_checkpoint, tiny_prior_checkpoint, tmp_path
):
    from codec.prior_api import TokenPrior

    clips = one_clip_folder(tmp_path)
    out = tmp_path / "eval"
    run_evaluation(
        tiny_checkpoint,
        out,
        f"--folder {clips} --bitrates 1.5 --entropy-bitrates 1.5 --pitch-bitrates 1.5 --prior "
        f"{tiny_prior_checkpoint} --examples 0 --no-perceptual",
    )
    rows = {r["setting"]: r for r in read_csv(out / "per_file.csv")}
    coded, pitched = rows["1.5 kbps + prior"], rows["1.5 kbps + prior + pitch"]
    codec, prior = Codec.load(tiny_checkpoint), TokenPrior.load(tiny_prior_checkpoint)
    audio, rate = load_16k(clips / "a.wav")
    encoded = codec.encode(audio, rate, bitrate=1.5, pitch=True)
    data = codec.to_bytes(encoded, prior)
    assert int(pitched["bytes"]) == len(data) > int(coded["bytes"])
    decoded = codec.decode(codec.from_bytes(data, prior))[0, 0].numpy()
    expected = score(audio[0].numpy(), decoded)
    assert float(pitched["mel_distance"]) == pytest.approx(expected.mel_distance, abs=1e-3)


@pytest.mark.slow  # ~15-25 s: an ASR pass, DNSMOS and a speaker embedding per output and per original
def test_perceptual_metrics_score_every_system_and_pool_dwer_over_the_english_files(tiny_checkpoint, tmp_path, capsys):
    from pathlib import Path

    from training import perceptual

    clips = tmp_path / "clips"
    (clips / "en").mkdir(parents=True)
    speech, _ = sf.read(Path(__file__).parent / "data" / "arctic_a0009.wav", dtype="float32")
    sf.write(clips / "en" / "whole.wav", speech, 16000, subtype="PCM_16")
    sf.write(clips / "en" / "start.wav", speech[:28000], 16000, subtype="PCM_16")  # fewer words
    sf.write(clips / "tone.wav", harmonic_signal(1.0, 16000, 3), 16000, subtype="PCM_16")  # not English
    out = tmp_path / "eval"
    run_evaluation(tiny_checkpoint, out, f"--folder {clips} --bitrates 1.5 --english 'en/*' --examples 0")

    rows = read_csv(out / "per_file.csv")
    assert len(rows) == 3
    for row in rows:
        assert 1 <= float(row["dnsmos_ovrl"]) <= 5 and 0 < float(row["spk_sim"]) <= 1
        assert (row["dwer"] != "") == row["file"].startswith("en/")
    summary = read_csv(out / "summary.csv")
    reference = summary[0]
    assert (reference["family"], reference["setting"], reference["files"]) == ("reference", "original", "3")
    assert reference["pesq_wb"] == reference["kbps"] == reference["dwer"] == ""
    originals = {name: evaluate.load_audio(str(clips / name)) for name in ("en/whole.wav", "en/start.wav", "tone.wav")}
    assert float(reference["dnsmos_ovrl"]) == pytest.approx(
        np.mean([perceptual.dnsmos(a).ovrl for a in originals.values()]), abs=1e-3
    )
    # Pooled: word errors over reference words, so the longer file weighs more.
    words = {name: len(perceptual.transcribe(originals[name]).split()) for name in ("en/whole.wav", "en/start.wav")}
    assert words["en/whole.wav"] > words["en/start.wav"] > 0
    for system in summary[1:]:
        mine = [r for r in rows if r["setting"] == system["setting"]]
        pooled = sum(float(r["dwer"]) * words[r["file"]] for r in mine if r["dwer"]) / sum(words.values())
        assert float(system["dwer"]) == pytest.approx(pooled, abs=1e-3)
        assert (system["dwer_files"], system["dwer_words"]) == ("2", str(sum(words.values())))
        assert float(system["spk_sim"]) == pytest.approx(np.mean([float(r["spk_sim"]) for r in mine]), abs=1e-3)
    printed = capsys.readouterr().out
    assert "dWER%" in printed and "reference" in printed and "dWER on the 2 English file(s)" in printed


def test_a_second_held_out_set_is_scored_in_the_same_run_and_reported_on_its_own(
    tiny_checkpoint, tiny_corpus, tmp_path, capsys
):
    checkpoint = tiny_checkpoint
    out = tmp_path / "eval"
    # --kind applies to both sets: the second set is the val split's speech.
    run_evaluation(
        checkpoint,
        out,
        f"--manifest {tiny_corpus} --split train --kind music --kind speech --bitrates 0.6 --examples 0 "
        f"--no-perceptual --also clean {tiny_corpus} val --also-max-minutes 0.02",
    )
    main_files = {r["file"] for r in read_csv(out / "per_file.csv")}
    clean_files = {r["file"] for r in read_csv(out / "clean" / "per_file.csv")}
    assert main_files == {f"train/{'music' if i % 4 == 3 else 'speech'}/clip{i}.flac" for i in range(8)}
    # Its own minutes: whole files until 1.2 s are reached, so one of the two val clips.
    assert len(clean_files) == 1 and clean_files < {"val/speech/clip8.flac", "val/speech/clip9.flac"}
    printed = capsys.readouterr().out
    assert "held-out set clean (val)" in printed
    assert printed.count("targets:") == 2 and "NOT MET" in printed  # no baselines: nothing to beat


def test_baseline_settings_can_be_chosen(monkeypatch):
    from training import baselines

    monkeypatch.setattr(baselines, "missing_tools", lambda: {"opus": [], "codec2": []})
    systems = baselines.build_systems(None, [], opus_kbps=(6.0,), codec2_modes=(3200,))
    assert [(s.family, s.setting) for s in systems] == [("opus", "6 kbps"), ("codec2", "mode 3200")]
    default = baselines.build_systems(None, [])
    assert [s.setting for s in default if s.family == "opus"] == [f"{k:g} kbps" for k in baselines.OPUS_KBPS]
    args = evaluate.parse_args(["--folder", ".", "--opus-kbps", "6,8", "--codec2-modes", "1600"])
    assert list(args.opus_kbps) == [6.0, 8.0] and list(args.codec2_modes) == [1600]
