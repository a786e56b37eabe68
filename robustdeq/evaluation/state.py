"""Resumable evaluation: per-batch attack outcomes saved atomically after every attack batch.

The state file is keyed by the model's weights, the protocol's content hash, the attack batch
size and the test subset. A run that finds a state with the same key skips every batch already
recorded; each batch's attack is seeded by its position, so the resumed run ends with exactly the
numbers of an uninterrupted one. A state with another key is ignored and overwritten.

Under torchrun each rank keeps its own state (its own file) and runs only the attack batches
:meth:`EvalState.runs_here` deals to it; the runner gathers the records afterwards.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustdeq.device import CPU
from robustdeq.records.store import atomic_write_text


def evaluation_key(model: nn.Module, protocol_hash: str, indices: Tensor, batch_size: int) -> str:
    """Hash of the weights (names, shapes, bytes), the protocol, the batch size and the evaluated examples."""
    digest = hashlib.sha256(protocol_hash.encode())
    digest.update(f"batch_size={batch_size}".encode())
    digest.update(indices.to(CPU, torch.int64).numpy().tobytes())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to(CPU).contiguous().float().numpy().tobytes())
    return digest.hexdigest()


class EvalState:
    """Batch records under string keys; ``path`` None keeps them in memory only.

    ``rank`` and ``world`` (torchrun) say which batches this process runs; see :meth:`runs_here`.
    """

    def __init__(self, path: Path | None, key: str, rank: int = 0, world: int = 1) -> None:
        self.path = path
        self.key = key
        self.rank = rank
        self.world = world
        self.owners: dict[str, int] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.resumed = 0
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                data = {}
            if data.get("key") == key:
                self.batches = data["batches"]
        self._from_disk = set(self.batches)

    def get(self, name: str) -> dict[str, Any] | None:
        """The record saved under ``name``; the same attack batch asked for twice in one run (the
        eps sweep at the protocol's eps repeats the main attack) is computed once."""
        if name in self._from_disk:
            self._from_disk.discard(name)
            self.resumed += 1
        return self.batches.get(name)

    def runs_here(self, name: str) -> bool:
        """Whether this rank runs the attack batch ``name``: batches are dealt round-robin to the
        ranks in the order the evaluation first asks for them, which is the same on every rank
        (whatever each rank resumed from its own file), so every batch has exactly one owner."""
        owner = self.owners.setdefault(name, len(self.owners) % self.world)
        return owner == self.rank

    def put(self, name: str, record: dict[str, Any]) -> None:
        self.batches[name] = record
        if self.path is not None:
            atomic_write_text(self.path, json.dumps({"key": self.key, "batches": self.batches}))

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
