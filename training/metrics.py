"""Objective quality of a decoded signal against its reference, both mono at 16 kHz.

Codecs delay their output by different amounts (Opus's look-ahead, Codec2's analysis window), and
PESQ, STOI and SI-SDR are all hurt by a misalignment of a few samples, so every output is first
shifted back by its codec's delay. A codec's delay is one number for all files (`system_delay`):
the lag that maximises the cross-correlation pooled over several files, found on the signals'
energy envelopes first, then refined on the waveforms. Aligning each file by its own waveform
cross-correlation (`align`) is only sound for waveform-matching codecs: for a vocoder whose phase
is not the input's (ours, Codec2) the correlation peak is noise, and per-file lags of up to
+-100 ms scattered its outputs against the reference. Signals are 1-D float arrays [T] in [-1, 1].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from training.losses import mel_distance

SAMPLE_RATE = 16000
MAX_LAG_S = 0.1


def si_sdr(reference: np.ndarray, estimate: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), zero-mean signals.

    reference, estimate: [T] of equal length.
    """
    reference = reference.astype(np.float64) - reference.mean()
    estimate = estimate.astype(np.float64) - estimate.mean()
    scale = np.dot(estimate, reference) / (np.dot(reference, reference) + eps)
    target = scale * reference
    noise = estimate - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def _correlation(reference: np.ndarray, output: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """sum_t reference[t] * output[t + lag] for each lag (0 where the signals do not overlap)."""
    size = len(reference) + len(output) - 1
    n = 1 << max(size - 1, 1).bit_length()  # a power of two >= size: fast FFTs, no wrap-around
    corr = np.fft.irfft(np.conj(np.fft.rfft(reference, n)) * np.fft.rfft(output, n), n)
    valid = (lags > -len(reference)) & (lags < len(output))
    return np.where(valid, corr[lags % n], 0.0)


def find_lag(reference: np.ndarray, output: np.ndarray, max_lag: int) -> int:
    """The lag d in [-max_lag, max_lag] maximising sum_t reference[t] * output[t + d].

    d > 0 means the output is late. A silent output has no defined lag; it gets 0.
    """
    lags = np.arange(-max_lag, max_lag + 1)
    values = _correlation(reference, output, lags)
    if not np.any(values > 0):
        return 0
    return int(lags[np.argmax(values)])


def shift(output: np.ndarray, lag: int, length: int) -> np.ndarray:
    """Undo a lag found by find_lag, then trim or zero-pad to `length` samples."""
    output = output[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, output.dtype), output])
    if len(output) >= length:
        return output[:length]
    return np.concatenate([output, np.zeros(length - len(output), output.dtype)])


def align(reference: np.ndarray, output: np.ndarray, max_lag_s: float = MAX_LAG_S) -> tuple[np.ndarray, int]:
    """Output shifted into line with the reference and cut to its length [T], and the lag used."""
    lag = find_lag(reference, output, int(round(max_lag_s * SAMPLE_RATE)))
    return shift(output, lag, len(reference)), lag


ENVELOPE_HOP = 32  # samples (2 ms) per frame of the energy envelope used for the coarse search


def _pooled_correlation(pairs: list[tuple[np.ndarray, np.ndarray]], lags: np.ndarray) -> np.ndarray:
    """Sum over (reference, output) pairs of their normalised cross-correlation at `lags`:
    sum_t reference[t] * output[t + lag] / (|reference| |output|)."""
    total = np.zeros(len(lags))
    for reference, output in pairs:
        norm = np.linalg.norm(reference) * np.linalg.norm(output)
        if norm > 0:
            total += _correlation(reference, output, lags) / norm
    return total


def _envelope(x: np.ndarray) -> np.ndarray:
    """Frame RMS every ENVELOPE_HOP samples, mean removed: [T] -> [T // ENVELOPE_HOP]."""
    frames = x[: len(x) // ENVELOPE_HOP * ENVELOPE_HOP].astype(np.float64).reshape(-1, ENVELOPE_HOP)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return rms - rms.mean()


def system_delay(pairs: list[tuple[np.ndarray, np.ndarray]], max_lag: int) -> int:
    """One codec's delay in samples (> 0: its output is late), from (reference, output) pairs.

    Coarse: the lag of the pooled cross-correlation of energy envelopes (phase-blind, so it holds
    for vocoders). Fine: the pooled waveform cross-correlation within one envelope frame of it."""
    if max_lag <= 0 or not pairs:
        return 0
    frames = max_lag // ENVELOPE_HOP
    coarse_lags = np.arange(-frames, frames + 1)
    coarse = _pooled_correlation([(_envelope(r), _envelope(o)) for r, o in pairs], coarse_lags)
    centre = int(coarse_lags[np.argmax(coarse)]) * ENVELOPE_HOP if np.any(coarse > 0) else 0
    fine_lags = np.arange(centre - ENVELOPE_HOP, centre + ENVELOPE_HOP + 1)
    fine_lags = fine_lags[np.abs(fine_lags) <= max_lag]
    fine = _pooled_correlation([(r.astype(np.float64), o.astype(np.float64)) for r, o in pairs], fine_lags)
    return int(fine_lags[np.argmax(fine)]) if np.any(fine > 0) else centre


@dataclass(frozen=True)
class Scores:
    pesq_wb: float | None  # None: PESQ refused the file (too short, or no speech found)
    stoi: float | None  # None: under ~0.4 s of non-silent audio, too little for STOI
    si_sdr: float  # dB
    mel_distance: float  # log10-mel L1, training.losses.mel_distance


def pesq_wb(reference: np.ndarray, degraded: np.ndarray) -> float | None:
    from pesq import PesqError
    from pesq import pesq as pesq_score

    try:
        return float(pesq_score(SAMPLE_RATE, reference, degraded, "wb"))
    except PesqError:
        return None


def stoi(reference: np.ndarray, degraded: np.ndarray) -> float | None:
    from pystoi import stoi as pystoi_stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi_stoi(reference, degraded, SAMPLE_RATE, extended=False))
    # pystoi warns and returns 1e-5 instead of raising when too few frames remain.
    return None if any("Not enough STFT frames" in str(w.message) for w in caught) else value


def score(reference: np.ndarray, degraded: np.ndarray) -> Scores:
    """All metrics of an aligned output; reference, degraded: [T] float at 16 kHz, equal length."""
    reference = reference.astype(np.float64)
    degraded = degraded.astype(np.float64)
    mel = mel_distance(
        torch.from_numpy(degraded).float()[None, None], torch.from_numpy(reference).float()[None, None], SAMPLE_RATE
    )
    return Scores(
        pesq_wb=pesq_wb(reference, degraded),
        stoi=stoi(reference, degraded),
        si_sdr=si_sdr(reference, degraded),
        mel_distance=float(mel),
    )
