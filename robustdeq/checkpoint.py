"""Checkpoints: one safetensors file holding the weights and what built them (no pickled code).

The file's metadata (``__metadata__``, strings only) holds ``format`` and ``meta``, a JSON object:
the defense id, the manifest's text (and the factory's ``model.py`` text for a submitted model),
the data set and protocol it was trained for, the training record and times, the versions and
commit. A checkpoint therefore stands on its own: :func:`robustdeq.pipeline.load_trained` builds
the model from the manifest it carries, wherever it is read and whatever has happened to the
defense folder since.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from robustdeq.device import of as device_of
from robustdeq.errors import RobustdeqError
from robustdeq.records.entry import CheckpointMeta
from robustdeq.records.parse import parse
from robustdeq.records.paths import ID_PATTERN
from robustdeq.records.store import sha256 as sha256
from robustdeq.records.store import umask

FORMAT = "robustdeq-checkpoint/1"
FILENAME = "model.safetensors"  # the file inside a `robustdeq train` folder


def save_checkpoint(model: nn.Module, path: Path, meta: dict[str, Any]) -> str:
    """Write the weights and ``meta`` to the safetensors file ``path`` (atomically, on disk before it
    takes the name, readable by others as the umask allows); returns the file's SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": FORMAT, "meta": json.dumps(meta, sort_keys=True)})
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256(path)


def resolve_file(path: Path) -> Path:
    """``path`` itself, or ``path/model.safetensors`` for a `robustdeq train` folder."""
    file = path / FILENAME if path.is_dir() else path
    if not file.is_file():
        raise RobustdeqError(f"{path}: no checkpoint there (a .safetensors file or a folder holding {FILENAME})")
    return file


def read_meta(path: Path) -> dict[str, Any]:
    """The ``meta`` object a checkpoint carries; a one-line error for anything else."""
    file = resolve_file(path)
    try:
        with safe_open(str(file), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise RobustdeqError(f"{file}: not a safetensors file: {exc}") from None
    if header.get("format") != FORMAT:
        raise RobustdeqError(f"{file}: not a robustdeq checkpoint (no '{FORMAT}' metadata); was it saved by robustdeq?")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise RobustdeqError(f"{file}: its robustdeq metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise RobustdeqError(f"{file}: its robustdeq metadata is not a JSON object")
    missing = [key for key in ("defense", "manifest", "dataset", "protocol", "training") if key not in meta]
    if missing:
        raise RobustdeqError(f"{file}: its robustdeq metadata lacks {', '.join(missing)}")
    parse(CheckpointMeta, meta, f"{file}: metadata key meta", style="json")
    for key in ("defense", "protocol"):  # both become file names
        if not ID_PATTERN.fullmatch(meta[key]):
            raise RobustdeqError(f"{file}: its metadata names {key} {meta[key]!r}, not a plain lowercase name")
    return meta


def load_weights(model: nn.Module, weights: Path) -> nn.Module:
    """Load safetensors ``weights`` into ``model``, straight onto its device; any missing, extra or
    mis-shaped tensor is an error."""
    if not weights.is_file():
        raise RobustdeqError(f"{weights}: checkpoint not found")
    try:
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
