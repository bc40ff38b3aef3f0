"""The listener-oriented metrics (training.perceptual) on a real English clip: the recogniser,
dWER pooling, DNSMOS and speaker similarity each tell clean speech from damaged speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from training import perceptual

SPEECH = Path(__file__).parent / "data" / "arctic_a0009.wav"  # "He turned sharply, and faced Gregson across the table."


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    audio, rate = sf.read(SPEECH, dtype="float32")
    assert rate == 16000
    return audio


def with_noise(audio: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=audio.shape)
    noise *= np.sqrt(np.mean(audio.astype(np.float64) ** 2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    noisy = audio + noise
    return (noisy / max(1.0, np.abs(noisy).max())).astype(np.float32)


def test_the_recogniser_hears_the_words_of_a_known_clip(speech):
    words = perceptual.transcribe(speech).split()
    assert {"turned", "sharply", "across", "table"} <= set(words)


def test_dwer_is_zero_on_the_original_and_high_on_noise_or_damaged_speech(speech):
    original = perceptual.transcribe(speech)
    assert perceptual.dwer([original], [perceptual.transcribe(speech)]) == 0.0
    white = np.random.default_rng(1).normal(0, 0.1, speech.shape).astype(np.float32)
    assert perceptual.dwer([original], [perceptual.transcribe(white)]) >= 0.9
    assert perceptual.dwer([original], [perceptual.transcribe(with_noise(speech, 0.0))]) >= 0.5


def test_dwer_pools_word_errors_over_files_and_leaves_out_empty_references():
    # 1 deletion in 3 words, 2 insertions in 2 words: 3 errors / 5 words, not the mean of 1/3 and 1.
    assert perceptual.dwer(["a b c", "d e"], ["a b", "d e f g"]) == pytest.approx(0.6)
    assert perceptual.dwer(["", "a b"], ["x y", "a"]) == pytest.approx(0.5)
    assert perceptual.dwer([""], ["x"]) is None
    assert perceptual.dwer([], []) is None


def test_dnsmos_rates_clean_speech_above_the_same_speech_in_strong_noise(speech):
    clean, noisy = perceptual.dnsmos(speech), perceptual.dnsmos(with_noise(speech, 5.0))
    assert clean.ovrl > noisy.ovrl + 0.5
    assert clean.bak > noisy.bak + 1.0
    assert all(1.0 <= v <= 5.0 for v in (clean.sig, clean.bak, clean.ovrl, noisy.sig, noisy.bak, noisy.ovrl))
    # A decoder's output may overshoot [-1, 1]; it is clipped, not refused.
    assert perceptual.dnsmos(1.5 * speech / np.abs(speech).max()).ovrl > 1.0


def test_speaker_similarity_is_one_with_itself_and_lower_for_another_voice_or_noise(speech):
    own = perceptual.speaker_embedding(speech)
    assert own.shape == (256,)
    assert perceptual.cosine(own, perceptual.speaker_embedding(speech.copy())) > 0.999
    # Played 1.25x slower: pitch and formants 20% lower, as from a longer vocal tract.
    other_voice = AF.resample(torch.from_numpy(speech), 16000, 20000).numpy()
    white = np.random.default_rng(2).normal(0, 0.1, speech.shape).astype(np.float32)
    assert perceptual.cosine(own, perceptual.speaker_embedding(other_voice)) < 0.8
    assert perceptual.cosine(own, perceptual.speaker_embedding(white)) < 0.7
    assert perceptual.speaker_embedding(np.zeros(16000, np.float32)) is None


def test_an_output_is_scored_against_its_original_heard_once(speech):
    english = perceptual.listen_to_reference(speech, english=True)
    itself = perceptual.listen(english, speech)
    assert itself.scores.dwer == 0.0 and itself.transcript == english.transcript
    assert itself.scores.spk_sim > 0.999 and itself.scores.dnsmos_ovrl == pytest.approx(english.dnsmos.ovrl)
    silent = perceptual.listen(english, np.zeros_like(speech)).scores
    assert silent.dwer == 1.0 and silent.spk_sim == 0.0 and silent.dnsmos_ovrl < english.dnsmos.ovrl - 1
    other = perceptual.listen_to_reference(speech, english=False)
    heard = perceptual.listen(other, speech)
    assert other.transcript is None and heard.transcript is None and heard.scores.dwer is None


def test_english_files_are_chosen_by_glob_list_file_or_language(tmp_path):
    listed = tmp_path / "english.txt"
    listed.write_text("# read by people\nval/speech/a.flac\n\nval/b.flac  # and this\n")
    english = perceptual.EnglishFiles.parse(["val/speech/pocketsphinx-*/*", str(listed)])
    assert english("val/speech/pocketsphinx-testdata/cards__001.flac")
    assert english("val/speech/a.flac") and english("val/b.flac")
    assert not english("val/speech/klettres-data/da__1.flac")
    assert english("x.flac", "en") and english("x.flac", "en_GB") and not english("x.flac", "uk")
    assert [perceptual.group_language(g) for g in ("en", "en_GB", "uk", "cards", "Pirate", "librivox")] == [
        "en",
        "en_GB",
        "uk",
        "",
        "",
        "",
    ]


def test_dnsmos_gives_speechmos_scores_without_its_p808_model(speech):
    from speechmos import dnsmos as reference

    model = perceptual._dnsmos_model()
    long = np.concatenate([speech, speech, speech])  # several 9 s windows at 1 s hops
    for audio in (speech, long):
        ours = perceptual.dnsmos(audio)
        theirs = reference.DNSMOS.__call__(model, np.clip(audio, -1, 1).astype(np.float32), 16000, False)
        assert (ours.sig, ours.bak, ours.ovrl) == pytest.approx(
            (theirs["sig_mos"], theirs["bak_mos"], theirs["ovrl_mos"]), abs=1e-6
        )
