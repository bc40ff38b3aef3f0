"""The `codec` command line: encode, decode and inspect files.

    codec encode speech.wav speech.vqac --bitrate 3
    codec decode speech.vqac speech.out.wav
    codec info speech.vqac

`-` reads stdin or writes stdout. Errors print one line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from codec import bitstream
from codec.errors import CodecError


def _progress(total: int, enabled: bool, unit: str = "frame"):
    if not enabled or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, file=sys.stderr, leave=False)
    return bar.update, bar.close


@contextmanager
def _output(path: str) -> Iterator[BinaryIO]:
    """A binary stream for `path` (or stdout); a file appears only once it is complete."""
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent if str(target.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_input(path: str) -> bytes | str:
    return sys.stdin.buffer.read() if path == "-" else path


def _load_codec(args):
    from codec.api import Codec

    return Codec.load(args.checkpoint)


def cmd_encode(args) -> None:
    codec = _load_codec(args)
    from codec.audio import open_audio

    source = open_audio(_read_input(args.input), codec.sample_rate)
    update, close = _progress(codec.model.num_frames(source.num_samples), not args.quiet)
    try:
        encoded = codec.encode_source(source, args.bitrate, update)
    finally:
        close()
    data = codec.to_bytes(encoded)
    with _output(args.output) as out:
        out.write(data)


def _wav_header(num_samples: int, sample_rate: int) -> bytes:
    data_bytes = num_samples * 2
    return b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16
    ) + b"data" + struct.pack("<I", data_bytes)


def _pcm16(piece) -> bytes:
    return (piece.clamp(-1, 1) * 32767).round().short().numpy().astype("<i2").tobytes()


def cmd_decode(args) -> None:
    codec = _load_codec(args)
    source = _read_input(args.input)
    data = source if isinstance(source, bytes) else _read_file(source)
    encoded = codec.from_bytes(data)
    update, close = _progress(encoded.codes.shape[-1], not args.quiet)
    fmt = (args.format or Path(args.output).suffix.lstrip(".") or "wav").lower()
    try:
        with _output(args.output) as out:
            pieces = codec.decode_iter(encoded, progress=update)
            if fmt == "wav":
                # The length is known up front, so the WAV header can be written first and the
                # samples streamed after it, to a file or a pipe alike.
                out.write(_wav_header(encoded.num_samples, codec.sample_rate))
                for piece in pieces:
                    out.write(_pcm16(piece))
            else:
                import soundfile as sf

                buffer = io.BytesIO() if args.output == "-" else out
                with sf.SoundFile(buffer, "w", codec.sample_rate, 1, format=fmt.upper(), subtype="PCM_16") as f:
                    for piece in pieces:
                        f.write(piece.reshape(-1).clamp(-1, 1).numpy())
                if buffer is not out:
                    out.write(buffer.getvalue())
    finally:
        close()


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise CodecError(f"cannot read {path}: {error.strerror or error}") from None


def cmd_info(args) -> None:
    source = _read_input(args.input)
    data = source if isinstance(source, bytes) else _read_file(source)
    header = bitstream.read_stream(data).header
    duration = header.num_samples / header.sample_rate
    print(f"model:        {header.model_id}")
    print(f"coding:       {header.coding}")
    print(f"sample rate:  {header.sample_rate} Hz")
    print(f"frame rate:   {header.frame_rate:g} Hz")
    print(f"levels:       {header.num_levels} x {header.codebook_size} entries ({header.bits_per_code} bits)")
    print(f"duration:     {duration:.3f} s ({header.num_samples} samples, {header.num_frames} frames)")
    print(f"code bitrate: {header.bitrate / 1000:g} kbps")
    if duration > 0:
        print(f"file bitrate: {len(data) * 8 / duration / 1000:.3f} kbps ({len(data)} bytes)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codec", description="Neural audio codec (VQ-VAE, 16 kHz).")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--checkpoint", help="codec checkpoint (.safetensors); default: the bundled model")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    enc = sub.add_parser("encode", help="audio file -> codec file")
    enc.add_argument("input", help="audio file (wav, flac, ogg, ...) or - for stdin")
    enc.add_argument("output", help="codec file or - for stdout")
    enc.add_argument("--bitrate", type=float, default=None, help="kbps (0.5 to 6); default: the highest")
    common(enc)

    dec = sub.add_parser("decode", help="codec file -> audio file")
    dec.add_argument("input", help="codec file or - for stdin")
    dec.add_argument("output", help="audio file (.wav or .flac) or - for stdout (WAV)")
    dec.add_argument("--format", choices=["wav", "flac"], help="output format; default: from the extension")
    common(dec)

    info = sub.add_parser("info", help="describe a codec file")
    info.add_argument("input", help="codec file or - for stdin")
    return parser


COMMANDS = {"encode": cmd_encode, "decode": cmd_decode, "info": cmd_info}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except CodecError as error:
        print(f"codec: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"codec: error: {error.strerror or error}: {getattr(error, 'filename', '') or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("codec: interrupted", file=sys.stderr)
        return 130
    return 0
