"""Checkpoints as safetensors files: tensors plus a JSON config and a format version, no pickle.

A checkpoint holds one model's state dict (optionally stored in half precision) and, in the
safetensors metadata, `format_version`, `kind` (which model class it is for) and `config` (the
frozen config dataclass as JSON). Loading is strict: missing, unexpected or misshapen tensors
and unknown config fields are errors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from codec.errors import CheckpointError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    kind: str  # "codec" or "prior"
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    digest: str  # content_digest(kind, config, tensors), hex: identifies the exact weights


def save_checkpoint(
    path: str | Path,
    kind: str,
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    half: bool = False,
) -> None:
    """Write state_dict with its config; `half` stores float tensors as float16 (about half the size)."""
    tensors = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        tensors[name] = tensor
    metadata = {"format_version": str(FORMAT_VERSION), "kind": kind, "config": json.dumps(config)}
    data = save_bytes(tensors, metadata=metadata)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def read_checkpoint(path: str | Path, kind: str) -> Checkpoint:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error.strerror or error}") from None
    try:
        tensors = load_bytes(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not a valid checkpoint: {error}") from None
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: unsupported checkpoint format version {version!r}")
    if metadata.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {metadata.get('kind')!r} model, expected {kind!r}")
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: missing or malformed config") from None
    return Checkpoint(kind, config, tensors, content_digest(kind, config, tensors))


def content_digest(kind: str, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of what a checkpoint holds, not of its file: the safetensors writer puts the metadata
    keys in a different order on every save, so hashing the file gave the same weights a new id
    (and a prior a stale codec id) each time they were written."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"kind": kind, "config": config}, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _metadata(data: bytes) -> dict[str, str]:
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    return header.get("__metadata__", {})


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Strictly copy tensors into module, converting dtypes to the module's own."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    converted = {}
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)}, model expects {tuple(expected[name].shape)}"
            )
        converted[name] = tensor.to(expected[name].dtype)
    module.load_state_dict(converted, strict=True)


def load_model(
    path: str | Path | None,
    kind: str,
    bundled: Path,
    make_config: Callable[[dict[str, Any]], Any],
    build: Callable[[Any], torch.nn.Module],
) -> tuple[torch.nn.Module, Checkpoint]:
    """Read a checkpoint of `kind` (None: the bundled one), build its model from its config and
    load the weights; any problem is a CheckpointError naming the file."""
    if path is None:
        path = bundled
        if not path.exists():
            raise CheckpointError(f"no bundled {kind} at {path}; pass a checkpoint path")
    checkpoint = read_checkpoint(path, kind=kind)
    try:
        config = make_config(checkpoint.config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid {kind} config: {error}") from None
    model = build(config)
    load_state(model, checkpoint.tensors, str(path))
    return model, checkpoint
