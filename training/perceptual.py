"""Listener-oriented metrics of decoded speech, beside training.metrics' signal metrics.

- dWER (intelligibility): the word error rate of an ASR system (pocketsphinx, its default US
  English model) on the decoded audio against the same system's transcript of the original, so
  the recogniser's own mistakes on the original do not count against the codec. English files
  only. Pooled over files as codec papers do: total word errors / total reference words.
- DNSMOS P.835 (non-intrusive quality, Reddy et al. 2022): SIG (the speech), BAK (the
  background), OVRL, from the ONNX models that the speechmos package ships. As in Microsoft's
  reference script, 9.01 s windows are scored every second and averaged, and a shorter clip is
  repeated to 9.01 s.
- Speaker similarity: cosine of Resemblyzer (GE2E) utterance embeddings of original and output.

What a file's outputs are compared with (`listen_to_reference`) is computed once per file, not
once per system. Models load on first use, once per process (each evaluation worker loads its
own), and nothing heavy is imported before; onnxruntime is held to one thread so that it does
not fight the evaluation's worker processes for cores. Signals are mono float [T] at 16 kHz.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Dnsmos:
    sig: float  # speech quality, 1-5
    bak: float  # background noise (5: none)
    ovrl: float  # overall


@dataclass(frozen=True)
class ReferenceListening:
    """What the outputs of one original are compared with."""

    transcript: str | None  # the ASR's words for the original; None: not an English file
    embedding: np.ndarray | None  # [256] speaker embedding; None: the original is silent
    dnsmos: Dnsmos  # the original's own quality: the ceiling for its outputs


@dataclass(frozen=True)
class PerceptualScores:
    """One output's scores; the field names are training.evaluate.Row's columns."""

    dwer: float | None  # None: not English, or the original's transcript is empty
    dnsmos_sig: float
    dnsmos_bak: float
    dnsmos_ovrl: float
    spk_sim: float | None  # None: the original is silent


@dataclass(frozen=True)
class Listening:
    scores: PerceptualScores
    transcript: str | None  # what the ASR heard in the output; None: not an English file


# --- models, loaded once per process -------------------------------------------------------


@functools.cache
def _recogniser():
    from pocketsphinx import Decoder

    return Decoder(loglevel="FATAL")  # the default English acoustic model, dictionary and LM


@functools.cache
def _dnsmos_model():
    import onnxruntime
    from speechmos import dnsmos

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1

    class SingleThreadDnsmos(dnsmos.DNSMOS):
        def __init__(self, primary_model_path: str, p808_model_path: str):
            self.primary_model_path = primary_model_path
            providers = ["CPUExecutionProvider"]
            self.onnx_sess = onnxruntime.InferenceSession(primary_model_path, options, providers=providers)
            self.p808_onnx_sess = onnxruntime.InferenceSession(p808_model_path, options, providers=providers)

        def __call__(self, audio: np.ndarray, fs: int, is_personalized_MOS: bool) -> dict:
            """speechmos's DNSMOS.__call__ (9.01 s windows at 1 s hops, short clips tiled to fill
            one) without the P.808 model, whose score we do not report and whose librosa
            mel spectrogram cost more than the rest together."""
            length = int(dnsmos.INPUT_LENGTH * fs)
            while len(audio) < length:
                audio = np.append(audio, audio)
            hops = int(np.floor(len(audio) / fs) - dnsmos.INPUT_LENGTH) + 1
            scores = []
            for index in range(hops):
                segment = audio[int(index * fs) : int((index + dnsmos.INPUT_LENGTH) * fs)]
                if len(segment) < length:
                    continue
                raw = self.onnx_sess.run(None, {"input_1": segment.astype(np.float32)[np.newaxis, :]})[0][0]
                scores.append(self.get_polyfit_val(*raw, is_personalized_MOS))
            sig, bak, ovrl = np.mean(scores, axis=0)
            return {"sig_mos": sig, "bak_mos": bak, "ovrl_mos": ovrl}

    models = Path(dnsmos.__file__).parent / "dnsmos_models"
    return SingleThreadDnsmos(str(models / "sig_bak_ovr.onnx"), str(models / "model_v8.onnx"))


@functools.cache
def _resemblyzer():
    """resemblyzer.audio (its preprocessing steps) and the voice encoder."""
    with warnings.catch_warnings():  # of deprecated imports inside: pkg_resources, scipy.ndimage.morphology
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        from resemblyzer import VoiceEncoder, audio
    return audio, VoiceEncoder("cpu", verbose=False)


# --- the three metrics ---------------------------------------------------------------------


def transcribe(audio: np.ndarray) -> str:
    """The recogniser's words for audio [T] (lower case, space-separated; '' when it hears none)."""
    pcm = np.clip(np.round(np.asarray(audio, np.float64) * 32768), -32768, 32767).astype(np.int16)
    decoder = _recogniser()
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return " ".join(hypothesis.hypstr.split()) if hypothesis is not None else ""


def dwer(references: list[str], hypotheses: list[str]) -> float | None:
    """Word errors (substitutions + deletions + insertions) over all pairs / words of all
    references; pairs with an empty reference are left out. None: no reference words at all."""
    import jiwer

    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.split()]
    if not pairs:
        return None
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


def dnsmos(audio: np.ndarray) -> Dnsmos:
    # The model refuses samples outside [-1, 1]; a codec's output may overshoot a little.
    scores = _dnsmos_model()(np.clip(audio, -1.0, 1.0).astype(np.float32), SAMPLE_RATE, False)
    return Dnsmos(float(scores["sig_mos"]), float(scores["bak_mos"]), float(scores["ovrl_mos"]))


def speaker_embedding(audio: np.ndarray) -> np.ndarray | None:
    """Unit-norm utterance embedding [256]; None for digital silence.

    As resemblyzer.preprocess_wav does at 16 kHz: quiet audio is raised to a set loudness and the
    VAD cuts long pauses; where it finds no voice at all (a broken decoder's buzz) the whole
    signal is embedded, so that such an output is still compared, and scores low."""
    if not np.any(audio):
        return None
    steps, encoder = _resemblyzer()
    louder = steps.normalize_volume(np.asarray(audio, np.float32), steps.audio_norm_target_dBFS, increase_only=True)
    voiced = steps.trim_long_silences(louder)
    return encoder.embed_utterance((voiced if len(voiced) else louder).astype(np.float32))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def speaker_similarity(reference: np.ndarray | None, output: np.ndarray) -> float | None:
    """Cosine of the original's embedding and the output's; None: the original is silent; 0: the
    output is (nothing of the voice is left)."""
    if reference is None:
        return None
    embedding = speaker_embedding(output)
    return 0.0 if embedding is None else cosine(reference, embedding)


# --- per file ------------------------------------------------------------------------------


def listen_to_reference(reference: np.ndarray, english: bool) -> ReferenceListening:
    return ReferenceListening(
        transcribe(reference) if english else None, speaker_embedding(reference), dnsmos(reference)
    )


def listen(reference: ReferenceListening, output: np.ndarray) -> Listening:
    """An output's scores against its original; output: [T], aligned with the original."""
    heard = transcribe(output) if reference.transcript is not None else None
    quality = dnsmos(output)
    scores = PerceptualScores(
        dwer=dwer([reference.transcript], [heard]) if heard is not None else None,
        dnsmos_sig=quality.sig,
        dnsmos_bak=quality.bak,
        dnsmos_ovrl=quality.ovrl,
        spk_sim=speaker_similarity(reference.embedding, output),
    )
    return Listening(scores, heard)


# --- which files are English ---------------------------------------------------------------

_LANGUAGE_TAG = re.compile(r"[a-z]{2,3}(?:[_-][A-Z]{2})?")  # "en", "da", "en_GB"; not "cards", "Pirate"


def group_language(group: str) -> str:
    """The language a manifest's group names where it is a language tag (the corpus groups some
    sources by language: 'en', 'da', 'uk' = Ukrainian), else '' (a speaker, a voice pack)."""
    return group if _LANGUAGE_TAG.fullmatch(group) else ""


@dataclass(frozen=True)
class EnglishFiles:
    """Which files get a dWER: a file is English where its relative name matches one of the
    globs (fnmatch: '*' also crosses '/') or is listed in one of the list files (one relative
    name a line, '#' starts a comment), or where its language is known to be English."""

    globs: tuple[str, ...] = ()
    names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, values: list[str]) -> EnglishFiles:
        """Each value is a list file if such a file exists, else a glob."""
        globs, names = [], set()
        for value in values:
            if Path(value).is_file():
                lines = (line.split("#")[0].strip() for line in Path(value).read_text().splitlines())
                names.update(line for line in lines if line)
            else:
                globs.append(value)
        return cls(tuple(globs), frozenset(names))

    def __call__(self, name: str, language: str = "") -> bool:
        return (
            language == "en"
            or language.startswith(("en_", "en-"))
            or name in self.names
            or any(fnmatch.fnmatchcase(name, glob) for glob in self.globs)
        )
