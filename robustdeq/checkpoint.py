"""Checkpoints: safetensors weights plus the JSON spec that built them (no pickled code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from robustdeq.device import of as device_of
from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard.store import atomic_write_text


def save_checkpoint(model: nn.Module, folder: Path, meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``meta.json`` into ``folder``; returns the weights path."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.safetensors"
    tmp = folder / ".model.safetensors.tmp"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    tmp.replace(weights)
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2) + "\n")
    return weights


def load_weights(model: nn.Module, weights: Path) -> nn.Module:
    """Load safetensors ``weights`` into ``model``; any missing, extra or mis-shaped tensor is an error."""
    if not weights.is_file():
        raise RobustdeqError(f"{weights}: checkpoint not found")
    try:  # straight onto the model's device
        state = load_file(str(weights), device=str(device_of(model)))
    except Exception as exc:  # safetensors raises its own error types
        raise RobustdeqError(f"{weights}: not a safetensors file: {exc}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise RobustdeqError(
            f"{weights}: checkpoint does not match the model (missing {missing[:3]}, extra {extra[:3]})"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise RobustdeqError(
                f"{weights}: tensor {key!r} has shape {tuple(tensor.shape)}, the model expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def read_meta(folder: Path) -> dict[str, Any]:
    path = folder / "meta.json"
    if not path.is_file():
        raise RobustdeqError(f"{folder}: no meta.json beside the checkpoint")
    meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return meta
