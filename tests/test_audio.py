"""The one 16-bit writer (codec.audio.write_audio, write_pieces): the CLI's streamed pieces and
the server's whole clips give the same bytes as libsndfile writing the file itself."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.audio import write_audio, write_pieces


class Pipe(io.RawIOBase):
    """A sink that cannot seek, like stdout into a pipe."""

    def __init__(self):
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)


@pytest.fixture
def wav() -> torch.Tensor:
    samples = np.random.default_rng(0).uniform(-1.2, 1.2, 5000).astype(np.float32)  # some beyond full scale
    return torch.from_numpy(samples)[None]


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_pieces_whole_and_libsndfile_agree(wav, fmt):
    expected = io.BytesIO()
    sf.write(expected, np.clip(wav[0].numpy(), -1, 1), 16000, format=fmt.upper(), subtype="PCM_16")
    whole = io.BytesIO()
    write_audio(whole, wav, 16000, fmt)
    pipe = Pipe()
    write_pieces(pipe, [wav[:, :1234], wav[:, 1234:1234], wav[:, 1234:]], 16000, wav.shape[-1], fmt)
    assert whole.getvalue() == expected.getvalue() == bytes(pipe.data)
    decoded, rate = sf.read(io.BytesIO(whole.getvalue()), dtype="float32")
    assert rate == 16000 and np.abs(decoded - np.clip(wav[0].numpy(), -1, 1)).max() <= 1 / 32768


def test_write_audio_to_a_path(wav, tmp_path):
    write_audio(tmp_path / "a.flac", wav, 16000, "FLAC")
    assert sf.info(tmp_path / "a.flac").format == "FLAC" and sf.info(tmp_path / "a.flac").frames == 5000


def test_a_wav_header_that_the_pieces_do_not_fill_is_an_error(wav):
    with pytest.raises(ValueError, match="announced 6000 samples"):
        write_pieces(io.BytesIO(), [wav], 16000, 6000)
    with pytest.raises(ValueError, match="unsupported audio format"):
        write_pieces(io.BytesIO(), [wav], 16000, 5000, "mp3")
