"""Bulk tokenization: encode a whole corpus into sharded token files plus an index.

    codec tokenize data/corpus/manifest.jsonl tokens/           # or a folder of audio files
    torchrun --nproc_per_node 2 -m codec tokenize ...            # each rank takes every n-th shard

Files are sorted and cut into fixed shards, so shard i always holds the same files whatever the
number of processes. Each shard is one safetensors file: `codes` int16 [K, total frames] (the
files one after another) and `offsets` int64 [files + 1], with the file list, the files that
could not be read and the codec's id in its metadata. Shards are written atomically and skipped
when already present for the same codec and files, so a crashed run resumes where it stopped.
`index.json` lists the shards once all exist.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from codec.api import Codec
from codec.errors import CodecError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au"}


@dataclass(frozen=True)
class ShardResult:
    index: int
    path: Path
    files: int
    frames: int
    failed: list[tuple[str, str]]  # (file, reason)
    skipped: bool  # already present from an earlier run


def list_inputs(source: str | Path, split: str | None = None) -> list[str]:
    """Audio files under a folder, or listed in a manifest (JSON lines with a `path` key), sorted."""
    source = Path(source)
    if source.is_dir():
        return sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not source.is_file():
        raise CodecError(f"{source} is neither a folder nor a manifest file")
    files = []
    with source.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                path = entry["path"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CodecError(f"{source}:{number}: not a manifest line with a 'path'") from None
            if split and entry.get("split") != split:
                continue
            files.append(path if Path(path).is_absolute() else str(source.parent / path))
    return sorted(files)


def _shard_path(out_dir: Path, index: int) -> Path:
    return out_dir / f"shard-{index:05d}.safetensors"


def _read_metadata(path: Path) -> dict | None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads(handle.metadata()["tokenizer"])
    except Exception:  # an unreadable shard is simply redone
        return None


def encode_shard(
    codec: Codec, files: list[str], bitrate: float | None, index: int, out_dir: Path, progress=None
) -> ShardResult:
    path = _shard_path(out_dir, index)
    meta = _read_metadata(path) if path.exists() else None
    if meta and meta["model_id"] == codec.model_id and meta["files"] == files and meta["bitrate"] == bitrate:
        return ShardResult(index, path, len(files), meta["frames"], [tuple(f) for f in meta["failed"]], True)
    pieces, offsets, failed, kept = [], [0], [], []
    for file in files:
        try:
            codes = codec.encode_file(file, bitrate).codes[0]
        except CodecError as error:
            failed.append((file, str(error)))
            print(f"tokenize: skipping {file}: {error}", file=sys.stderr)
            codes = torch.zeros(codec.num_levels(bitrate), 0, dtype=torch.long)
        pieces.append(codes.to(torch.int16))
        offsets.append(offsets[-1] + codes.shape[-1])
        kept.append(file)
        if progress:
            progress(1)
    levels = codec.num_levels(bitrate)
    codes = torch.cat(pieces, dim=-1) if pieces else torch.zeros(levels, 0, dtype=torch.int16)
    meta = {
        "model_id": codec.model_id,
        "files": kept,
        "failed": failed,
        "bitrate": bitrate,
        "frames": int(codes.shape[-1]),
        "num_levels": levels,
        "frame_rate": codec.config.frame_rate,
    }
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(
        {"codes": codes.contiguous(), "offsets": torch.tensor(offsets, dtype=torch.int64)},
        str(tmp),
        metadata={"tokenizer": json.dumps(meta)},
    )
    tmp.replace(path)
    return ShardResult(index, path, len(files), meta["frames"], failed, False)


def tokenize(
    codec: Codec,
    inputs: list[str],
    out_dir: str | Path,
    bitrate: float | None = None,
    shard_size: int = 256,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
) -> list[ShardResult]:
    """Encode this rank's shards of `inputs` into out_dir; returns what each shard holds."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = [inputs[i : i + shard_size] for i in range(0, len(inputs), shard_size)]
    mine = [i for i in range(len(shards)) if i % world == rank]
    from tqdm import tqdm

    bar = tqdm(total=sum(len(shards[i]) for i in mine), unit="file", disable=not progress or not sys.stderr.isatty())
    results = [encode_shard(codec, shards[i], bitrate, i, out_dir, bar.update) for i in mine]
    bar.close()
    return results


def write_index(out_dir: str | Path, num_shards: int) -> dict:
    """Collect every shard's metadata into index.json (call once all shards exist)."""
    out_dir = Path(out_dir)
    shards, failed, files, frames, model_ids = [], [], 0, 0, set()
    for i in range(num_shards):
        path = _shard_path(out_dir, i)
        meta = _read_metadata(path)
        if meta is None:
            raise CodecError(f"shard {path} is missing or unreadable; run tokenize again")
        shards.append({"path": path.name, "files": len(meta["files"]), "frames": meta["frames"]})
        failed += meta["failed"]
        files += len(meta["files"]) - len(meta["failed"])
        frames += meta["frames"]
        model_ids.add(meta["model_id"])
    index = {"model_id": sorted(model_ids), "shards": shards, "files": files, "frames": frames, "failed": failed}
    (out_dir / "index.json").write_text(json.dumps(index, indent=1))
    return index


def load_tokens(out_dir: str | Path) -> list[torch.Tensor]:
    """Every tokenized file's codes [K, N] (int64), in input order, from a finished index."""
    out_dir = Path(out_dir)
    index = json.loads((out_dir / "index.json").read_text())
    result = []
    for shard in index["shards"]:
        with safe_open(str(out_dir / shard["path"]), framework="pt") as handle:
            codes, offsets = handle.get_tensor("codes").long(), handle.get_tensor("offsets")
        result += [codes[:, offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    return result
