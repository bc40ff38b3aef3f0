"""Saving and restoring a training run exactly, without pickle.

Everything a resumed run needs (model and discriminator weights, optimizer moments, scheduler
step, the global and data RNG states, the step counter) goes into one safetensors file: tensors
under prefixed names, everything else as JSON in the metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def _flatten_optimizer(prefix: str, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Move an optimizer state dict's tensors into `tensors`; return the JSON-able remainder."""
    per_param: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        scalars = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
        per_param[str(index)] = scalars
    return {"state": per_param, "param_groups": state["param_groups"]}


def _unflatten_optimizer(prefix: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for index, scalars in meta["state"].items():
        state[int(index)] = dict(scalars)
    for name, tensor in tensors.items():
        if name.startswith(prefix + "/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(
    path: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    generators: dict[str, torch.Generator],
    info: dict[str, Any],
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module.{name}/{key}"] = value.detach().cpu().contiguous()
    meta: dict[str, Any] = {"info": info, "optimizers": {}, "schedulers": {}}
    for name, optimizer in optimizers.items():
        meta["optimizers"][name] = _flatten_optimizer(f"optim.{name}", optimizer.state_dict(), tensors)
    for name, scheduler in schedulers.items():
        meta["schedulers"][name] = scheduler.state_dict()
    tensors["rng/torch"] = torch.get_rng_state()
    for name, generator in generators.items():
        tensors[f"rng/{name}"] = generator.get_state()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"training_state": json.dumps(meta)})
    tmp.replace(path)


def load_training_state(
    path: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    generators: dict[str, torch.Generator],
) -> dict[str, Any]:
    """Restore everything saved by save_training_state; returns the saved `info`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["training_state"])
    tensors = load_file(str(path))
    for name, module in modules.items():
        prefix = f"module.{name}/"
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(_unflatten_optimizer(f"optim.{name}", meta["optimizers"][name], tensors))
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict(meta["schedulers"][name])
    torch.set_rng_state(tensors["rng/torch"])
    for name, generator in generators.items():
        generator.set_state(tensors[f"rng/{name}"])
    return meta["info"]
