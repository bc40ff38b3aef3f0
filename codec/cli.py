"""The `codec` command line: encode, decode and inspect files.

    codec encode speech.wav speech.vqac --bitrate 3
    codec decode speech.vqac speech.out.wav
    codec info speech.vqac

`-` reads stdin or writes stdout. Errors print one line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
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


def _refuse_same_file(source: str, output: str) -> None:
    """CodecError if writing `output` would replace `source` (the same file under any name)."""
    if "-" in (source, output):
        return
    try:
        same = os.path.samefile(source, output)
    except OSError:  # either does not exist (yet): not the same file
        return
    if same:
        raise CodecError(f"output {output} is the input file; write to another path")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised so that the command unwinds like Ctrl-C and removes its temporary output."""


def _terminate(signum, frame) -> None:
    raise _Terminated


def _read_input(path: str) -> bytes | str:
    return sys.stdin.buffer.read() if path == "-" else path


def _load_codec(args):
    from codec.api import Codec

    return Codec.load(args.checkpoint)


def cmd_encode(args) -> None:
    _refuse_same_file(args.input, args.output)
    codec = _load_codec(args)
    from codec.audio import open_audio

    source = open_audio(_read_input(args.input), codec.sample_rate)
    update, close = _progress(codec.model.num_frames(source.num_samples), not args.quiet)
    try:
        encoded = codec.encode_source(source, args.bitrate, update, pitch=args.pitch)
    finally:
        close()
    data = codec.to_bytes(encoded, _load_prior(args, codec) if args.entropy else None)
    with _output(args.output) as out:
        out.write(data)


def _load_prior(args, codec):
    from codec.prior_api import TokenPrior

    prior = TokenPrior.load(args.prior)
    codec.check_prior(prior)
    return prior


def _read_encoded(args, codec):
    """An EncodedAudio from a packed or entropy-coded file (the header says which; only the
    second needs the prior)."""
    source = _read_input(args.input)
    stream = codec.read_stream(source if isinstance(source, bytes) else _read_file(source))
    entropy_coded = stream.header.codes_coding == "entropy"
    return codec.from_stream(stream, _load_prior(args, codec) if entropy_coded else None)


def cmd_decode(args) -> None:
    _refuse_same_file(args.input, args.output)
    codec = _load_codec(args)
    encoded = _read_encoded(args, codec)
    update, close = _progress(encoded.codes.shape[-1], not args.quiet)
    try:
        _write_audio(args, codec, codec.decode_iter(encoded, progress=update), encoded.num_samples)
    finally:
        close()


def _write_audio(args, codec, pieces, num_samples: int) -> None:
    """Stream waveform pieces [1, L] to args.output as 16-bit WAV or FLAC."""
    from codec.audio import write_pieces

    fmt = (getattr(args, "format", None) or Path(args.output).suffix.lstrip(".") or "wav").lower()
    if fmt not in ("wav", "flac"):
        raise CodecError(f"unsupported output format {fmt!r}: use .wav or .flac")
    with _output(args.output) as out:
        write_pieces(out, pieces, codec.sample_rate, num_samples, fmt)


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


def cmd_sample(args) -> None:
    from codec.api import EncodedAudio

    codec = _load_codec(args)
    prior = _load_prior(args, codec)
    prompt = None
    levels = codec.num_levels(args.bitrate) if args.bitrate else prior.num_levels
    if args.prompt:
        prompt = codec.encode_file(_read_input(args.prompt), args.bitrate).codes
    try:
        codes = prior.sample(args.seconds, args.temperature, args.top_k, args.seed, prompt, levels)
    except ValueError as error:
        raise CodecError(str(error)) from None
    encoded = EncodedAudio(codes, codes.shape[-1] * codec.config.hop_length, codec.sample_rate, codec.model_id)
    _write_audio(args, codec, codec.decode_iter(encoded), encoded.num_samples)


def cmd_score(args) -> None:
    codec = _load_codec(args)
    prior = _load_prior(args, codec)
    encoded = codec.encode_file(_read_input(args.input), args.bitrate)
    bits_per_token = prior.cross_entropy(encoded.codes)
    packed = codec.config.bitrate(encoded.num_levels)
    per_second = bits_per_token * encoded.num_levels * codec.config.frame_rate
    print(f"levels:         {encoded.num_levels} ({packed / 1000:g} kbps packed)")
    print(f"cross-entropy:  {bits_per_token:.3f} bits/token (packed: {codec.config.bits_per_code})")
    print(f"prior rate:     {per_second:.0f} bits/s ({100 * (1 - per_second / packed):.1f}% below packed)")


def cmd_tokenize(args) -> None:
    import os

    from codec.tokenize import list_inputs, tokenize, write_index

    codec = _load_codec(args)
    inputs = list_inputs(args.input, args.split)
    if not inputs:
        raise CodecError(f"no audio files in {args.input}")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    results = tokenize(codec, inputs, args.output, args.bitrate, args.shard_size, rank, world, not args.quiet)
    done = sum(not r.skipped for r in results)
    failed = sum(len(r.failed) for r in results)
    print(
        f"rank {rank}: {done} shards encoded, {len(results) - done} already present, {failed} files unreadable",
        file=sys.stderr,
    )
    if world > 1:
        dist.barrier()
    if rank == 0:
        index = write_index(args.output, -(-len(inputs) // args.shard_size))
        print(
            f"{index['files']} files, {index['frames']} frames in {len(index['shards'])} shards; "
            f"{len(index['failed'])} unreadable (listed in index.json)",
            file=sys.stderr,
        )
    if world > 1:
        dist.destroy_process_group()


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
    enc.add_argument("--entropy", action="store_true", help="entropy-code the tokens with the prior")
    enc.add_argument(
        "--pitch",
        action="store_true",
        help="also send the input's f0 (about 0.2 kbps): the decoder's pulses stay in phase with the input",
    )
    common(enc)
    enc.add_argument("--prior", help="prior checkpoint for --entropy; default: the bundled prior")

    dec = sub.add_parser("decode", help="codec file -> audio file")
    dec.add_argument("input", help="codec file or - for stdin")
    dec.add_argument("output", help="audio file (.wav or .flac) or - for stdout (WAV)")
    dec.add_argument("--format", choices=["wav", "flac"], help="output format; default: from the extension")
    common(dec)
    dec.add_argument("--prior", help="prior checkpoint for entropy-coded files; default: the bundled prior")

    smp = sub.add_parser("sample", help="generate audio from the prior")
    smp.add_argument("output", help="audio file (.wav or .flac) or - for stdout")
    smp.add_argument("--seconds", type=float, default=5.0)
    smp.add_argument("--temperature", type=float, default=1.0)
    smp.add_argument("--top-k", type=int, default=None)
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--prompt", help="audio file to continue")
    smp.add_argument("--bitrate", type=float, default=None, help="levels to sample, as kbps; default: all")
    common(smp)
    smp.add_argument("--prior", help="prior checkpoint; default: the bundled prior")

    score = sub.add_parser("score", help="bits per second of a recording under the prior")
    score.add_argument("input", help="audio file or - for stdin")
    score.add_argument("--bitrate", type=float, default=None)
    common(score)
    score.add_argument("--prior", help="prior checkpoint; default: the bundled prior")

    tok = sub.add_parser("tokenize", help="encode a corpus into token shards (torchrun for several processes)")
    tok.add_argument("input", help="folder of audio files or a manifest (JSON lines with 'path')")
    tok.add_argument("output", help="output folder for shard-*.safetensors and index.json")
    tok.add_argument("--bitrate", type=float, default=None)
    tok.add_argument("--split", help="only manifest entries of this split")
    tok.add_argument("--shard-size", type=int, default=256, help="files per shard")
    common(tok)

    info = sub.add_parser("info", help="describe a codec file")
    info.add_argument("input", help="codec file or - for stdin")
    return parser


COMMANDS = {
    "encode": cmd_encode,
    "decode": cmd_decode,
    "info": cmd_info,
    "sample": cmd_sample,
    "score": cmd_score,
    "tokenize": cmd_tokenize,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        return _run(args)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    try:
        COMMANDS[args.command](args)
    except CodecError as error:
        print(f"codec: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(
            f"codec: error: {error.strerror or error}: {getattr(error, 'filename', '') or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 1
    except _Terminated:
        print("codec: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("codec: interrupted", file=sys.stderr)
        return 130
    return 0
