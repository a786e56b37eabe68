"""Outside attacks, verified: ``robustdeq challenge`` (docs/challenge.md).

Anyone may attack a zoo model with their own code and submit the adversarial examples they found as a
file: a safetensors file with two tensors, ``indices`` (int64, shape (N,): indices into the test split,
each one of the examples the entry evaluated, none twice) and ``x_adv`` (float32, shape (N, *input
shape): the perturbed inputs). Each example is verified exactly as the protocol's own are: finite, in
[0, 1], within eps of its clean input, and misclassified by a fresh instance of the model rebuilt from
its checkpoint, in eval mode, cold (a randomised model by the protocol's majority of ``votes`` forwards).
A file that breaks the format or the threat model is a one-line error and changes nothing.

The verified breaks are recorded in the entry (``challenges``: who, when, the file's SHA-256, how many
examples it held, which broke, which of those the protocol's attacks had left robust). The entry keeps
its own protocol number; tables show the best known robust accuracy (the per-example worst case over
both, :func:`robustdeq.records.entry.best_known`), marked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from robustdeq import zoo
from robustdeq.data import load
from robustdeq.errors import RobustdeqError
from robustdeq.evaluation.runner import Verifier
from robustdeq.leaderboard import render
from robustdeq.pipeline import load_trained, rebuilder
from robustdeq.records.entry import Challenge, outside_breaks, robust_indices
from robustdeq.records.outcomes import decode_indices
from robustdeq.records.protocol import find_protocol
from robustdeq.records.store import read_entries, read_entry, write_entry
from robustdeq.threat import ThreatModel


@dataclass(frozen=True)
class Verdict:
    """What one challenge file showed."""

    submitted: int
    broken: list[int]  # test-split indices misclassified (verified)
    new: list[int]  # of those, the ones neither the protocol's attacks nor an earlier challenge had broken
    protocol_robust: int
    best_known_robust: int
    n_examples: int


def find_target(target: str, root: Path | None = None) -> zoo.ZooModel:
    """A zoo model named ``NAME`` / ``PROTOCOL/NAME``, or the entry at the path ``target`` (a ``.json``
    file naming its checkpoint)."""
    path = Path(target)
    if path.suffix == ".json":
        if not path.is_file():
            raise RobustdeqError(f"{target}: no such entry")
        entry_file = path.resolve()
        found = [m for m in zoo.list_models(None, entry_file.parent.parent) if m.entry.resolve() == entry_file]
        if not found:
            raise RobustdeqError(f"{target}: the entry names no checkpoint, so there is no model to attack")
        return found[0]
    return zoo.find_model(target, root)


def read_challenge(file: Path, entry: dict[str, Any], threat: ThreatModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, x_adv)`` from a challenge file, checked against the entry and its threat model;
    anything else is a one-line error."""
    try:
        tensors = load_file(str(file))
    except (OSError, SafetensorError) as exc:
        raise RobustdeqError(f"{file}: not a readable safetensors file ({exc})") from None
    if set(tensors) != {"indices", "x_adv"}:
        raise RobustdeqError(f"{file}: expected exactly the tensors 'indices' and 'x_adv', found {sorted(tensors)}")
    indices, x_adv = tensors["indices"], tensors["x_adv"]
    if indices.dtype != torch.int64 or indices.dim() != 1 or len(indices) == 0:
        raise RobustdeqError(
            f"{file}: 'indices' must be a non-empty 1-D int64 tensor, got {indices.dtype} {tuple(indices.shape)}"
        )
    if len(set(indices.tolist())) < len(indices):
        raise RobustdeqError(f"{file}: 'indices' names an example twice")
    evaluated = set(decode_indices(entry["per_example"]["indices"]))
    stray = [i for i in indices.tolist() if i not in evaluated]
    if stray:
        raise RobustdeqError(
            f"{file}: index {stray[0]} is not one of the {len(evaluated)} examples the entry evaluated"
        )
    test = load(entry["dataset"], "test")
    shape = (len(indices), *test.x.shape[1:])
    if not x_adv.is_floating_point() or tuple(x_adv.shape) != shape:
        raise RobustdeqError(
            f"{file}: 'x_adv' must be a float tensor of shape {shape}, got {x_adv.dtype} {tuple(x_adv.shape)}"
        )
    x_adv = x_adv.float()
    bad = ~threat.verify(x_adv, test.x[indices])
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0])
        raise RobustdeqError(
            f"{file}: example {int(indices[row])} is not a valid adversarial example "
            f"(it must be finite, in [0, 1] and within {threat.norm} eps = {threat.eps:g} of the clean input)"
        )
    return indices, x_adv


def challenge(target: str, file: Path, by: str, root: Path | None = None, batch_size: int = 250) -> Verdict:
    """Verify the adversarial examples in ``file`` against the model ``target`` names and record the
    verified breaks in its entry (then re-render that protocol's tables)."""
    if not by.strip():
        raise RobustdeqError("--by: say who ran the attack")
    model_info = find_target(target, root)
    entry = read_entry(model_info.entry)
    if entry.get("per_example") is None:
        raise RobustdeqError(
            f"{model_info.entry}: a schema version 1 entry has no per-example outcomes to compare with"
        )
    if not file.is_file():
        raise RobustdeqError(f"{file}: no such file")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    if any(c["file_sha256"] == digest for c in entry.get("challenges") or []):
        raise RobustdeqError(f"{file}: this file (sha256 {digest[:12]}) is already recorded in {model_info.entry}")
    tm = entry["threat_model"]
    threat = ThreatModel(tm["norm"], tm["eps"])
    indices, x_adv = read_challenge(file, entry, threat)

    defense, trained = load_trained(zoo.fetch(model_info))
    fresh = rebuilder(defense, trained)
    if fresh is None:
        raise RobustdeqError(f"{model_info.name}: no checkpoint to rebuild fresh instances from")
    votes = find_protocol(entry["protocol"]).votes if "randomized_model" in entry["flags"] else 1
    y = load(entry["dataset"], "test").y[indices]
    labels = Verifier(fresh, votes).predict(trained.model, x_adv, y, batch_size).labels
    broken = sorted(int(i) for i in indices[labels != y])
    before = outside_breaks(entry)
    robust = set(robust_indices(entry))
    new = [i for i in broken if i in robust and i not in before]

    record = Challenge(
        by=by.strip(),
        when=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        file_sha256=digest,
        submitted=len(indices),
        broken=broken,
        new=new,
    )
    updated = {**entry, "challenges": [*(entry.get("challenges") or []), record.model_dump()]}
    folder = model_info.entry.parent
    write_entry(folder.parent, updated)
    render(read_entries(folder), folder)
    n = entry["n_examples"]
    protocol_robust = round(entry["robust_accuracy"] * n)
    return Verdict(len(indices), broken, new, protocol_robust, protocol_robust - len(outside_breaks(updated)), n)
