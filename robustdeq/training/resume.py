"""Resumable training: what the next epoch starts from, saved atomically after every finished epoch.

The file is safetensors (nothing pickled): the weights, the optimizer's tensors and the states of
the shuffling, attack and global generators, and in its metadata the epochs done, the seconds spent,
the last batch loss, the optimizer's other values and a key: the hash of everything that decides the
weights (the defense, its training spec, the data set, the threat model, the device type and the
number of processes). A run that finds a file with its key starts after the epochs it records and
ends with the weights of an uninterrupted run; a file with another key is ignored and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as to_bytes
from torch import Tensor, nn

from robustdeq import distributed
from robustdeq.device import CPU
from robustdeq.records.defense import DefenseSpec, TrainSpec
from robustdeq.records.store import atomic_write_bytes
from robustdeq.threat import ThreatModel

FORMAT = "robustdeq-training-state/1"


def training_key(defense: DefenseSpec, dataset: str, spec: TrainSpec, threat: ThreatModel, device: torch.device) -> str:
    """Hash of what decides the trained weights, so a state is only resumed by the same training."""
    fields = {
        "defense": defense.id,
        "manifest": defense.manifest,
        "files": list(defense.files),
        "model": [defense.model.family, defense.model.settings, defense.model.factory, defense.torchdeq_adapter],
        "solver": repr(defense.solver),
        "train": spec.to_dict(),
        "dataset": dataset,
        "threat": [threat.norm, threat.eps],
        **run_context(device),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def run_context(device: torch.device) -> dict[str, Any]:
    """The part of :func:`training_key` that running elsewhere changes: the device type and the number
    of processes (torchrun). Saved in the file too, so a run that cannot resume it can say why."""
    return {"device": device.type, "processes": distributed.world_size()}


class TrainingState:
    """The progress of one training run in the file ``path``, under ``key`` (:func:`training_key`)."""

    def __init__(self, path: Path, key: str, context: dict[str, Any] | None = None) -> None:
        self.path = path
        self.key = key
        self.context = context or {}  # :func:`run_context` of this run
        self.started = time.perf_counter()
        self.earlier = 0.0  # seconds spent by the runs this one resumes
        self.resumed = 0  # epochs taken from the file

    @property
    def seconds(self) -> float:
        """Seconds of training, those of interrupted runs included."""
        return self.earlier + time.perf_counter() - self.started

    def foreign(self) -> str | None:
        """What to tell the user when the file holds finished epochs of another training (which this
        run ignores and overwrites), else None."""
        meta = saved(self.path)
        if not meta.get("epochs") or meta.get("key") == self.key:
            return None
        theirs = meta.get("context") or {}
        why = [
            f"{name} {theirs[name]} there, {self.context[name]} in this run"
            for name in ("processes", "device")
            if name in theirs and name in self.context and theirs[name] != self.context[name]
        ]
        return (
            f"{self.path} holds {meta['epochs']} finished epochs of another training "
            f"({'; '.join(why) or 'its defense, training settings or data differ'}): this run starts from "
            "the first epoch and overwrites it (stop it now to keep that file)"
        )

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, generators: dict[str, torch.Generator]
    ) -> tuple[int, float]:
        """Load the last finished epoch into ``model``, ``optimizer`` and ``generators`` (and torch's
        global generator); returns the epochs done and the last batch loss, (0, nan) when there is no
        file with this key."""
        meta = saved(self.path)
        if meta.get("key") != self.key:
            return 0, float("nan")
        tensors = load_file(str(self.path))
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, Any]] = {int(i): dict(values) for i, values in meta["optimizer_values"].items()}
        for name, tensor in tensors.items():
            if name.startswith("optimizer."):
                _, i, key = name.split(".", 2)
                state.setdefault(int(i), {})[key] = tensor
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        for name, generator in generators.items():
            generator.set_state(tensors[f"generator.{name}"])
        torch.set_rng_state(tensors["generator.global"])
        self.earlier, self.resumed = float(meta["seconds"]), int(meta["epochs"])
        return self.resumed, float(meta["final_loss"])

    def save(
        self,
        epochs: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        generators: dict[str, torch.Generator],
        final_loss: float,
    ) -> None:
        """Record that ``epochs`` epochs are done (under torchrun rank 0 writes: every rank holds the same)."""
        if not distributed.is_main():
            return
        tensors: dict[str, Tensor] = {f"model.{k}": packed(v) for k, v in model.state_dict().items()}
        optimizer_state = optimizer.state_dict()
        values: dict[str, dict[str, Any]] = {}
        for i, entry in optimizer_state["state"].items():
            values[str(i)] = {}
            for key, value in entry.items():
                if isinstance(value, Tensor):
                    tensors[f"optimizer.{i}.{key}"] = packed(value)
                else:
                    values[str(i)][key] = value
        for name, generator in generators.items():
            tensors[f"generator.{name}"] = generator.get_state()
        tensors["generator.global"] = torch.get_rng_state()
        meta = {
            "key": self.key,
            "context": self.context,
            "epochs": epochs,
            "seconds": self.seconds,
            "final_loss": final_loss,
            "param_groups": optimizer_state["param_groups"],
            "optimizer_values": values,
        }
        atomic_write_bytes(self.path, to_bytes(tensors, metadata={"format": FORMAT, "meta": json.dumps(meta)}))


def packed(tensor: Tensor) -> Tensor:
    """A contiguous CPU copy (safetensors refuses views; a parametrization's base can be one, e.g.
    LyaDEQ's orthogonal head at MNIST size)."""
    return tensor.detach().to(CPU).clone(memory_format=torch.contiguous_format)


def saved(path: Path) -> dict[str, Any]:
    """What a training state file records (key, epochs done, seconds spent, ...); empty when there is
    no file or it is not one of ours."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        meta: dict[str, Any] = json.loads(header.get("meta", "{}"))
    except (OSError, SafetensorError, json.JSONDecodeError):
        return {}
    return meta if header.get("format") == FORMAT else {}
