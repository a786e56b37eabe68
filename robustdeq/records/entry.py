"""The leaderboard entry record, enforced on every read and write (``docs/entry.md`` explains each key).

:class:`EntryRecord` is the schema: unknown keys, missing keys and wrong types are one-line errors naming
the key (``entry.provenance.seed: expected integer, got str '0'``); numbers must be finite JSON
numbers (``true``/``false`` and strings are not numbers) and are kept as written, so an entry read
and written again is the same bytes. Keys that only some entries have (``federated``) may be
absent, never null. ``docs/schema/entry.schema.json`` is generated from it
(``python -m robustdeq.records.schemas``).

:class:`CheckpointMeta` is what a checkpoint carries besides its weights (:mod:`robustdeq.checkpoint`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import model_validator
from pydantic.json_schema import SkipJsonSchema

from robustdeq.errors import RobustdeqError
from robustdeq.records.outcomes import bits, check_outcomes, decode_indices, unbits
from robustdeq.records.parse import NotNull, Number, Record, parse
from robustdeq.records.solver import SolverSpec

SCHEMA_VERSION = 2
# Entries written before the regeneration of 2026-11-30 (version 1) are still read; the keys
# version 2 adds are optional for them (docs/entry.md).
READABLE_VERSIONS = (1, 2)

FreeTable = dict[str, Any]  # settings of a recipe, an attack or a model: any JSON values


class Threat(Record):
    norm: str
    eps: Number


class SweepPoint(Record):
    eps: Number
    robust_accuracy: Number


class EpsSweep(Record):
    attacks: list[str]
    points: list[SweepPoint]


class Solver(Record):
    settings: SolverSpec
    attack_grad_modes: list[str]
    nonconverged_clean: Number
    nonconverged_adversarial: Number
    mean_steps_clean: Number
    mean_steps_adversarial: Number
    spectral_radius: Number
    residual_trace_clean: list[Number]
    residual_trace_adversarial: list[Number]


class PerExample(Record):
    """Compact per-example outcomes (:mod:`robustdeq.records.outcomes`)."""

    indices: str
    clean_correct: str
    robust: str
    attack_order: list[str]
    broken_by: str


class DeviationRecord(Record):
    what: str
    kind: str
    why: str


class FidelityRecord(Record):
    title: str
    arxiv: str
    venue: str
    code: str
    data: str
    architecture: str
    training: str
    evaluation: str
    reported: str
    deviations: list[DeviationRecord]


class PaperResult(Record):
    label: str
    description: str
    accuracy: Number
    settings: FreeTable


class CheckpointRecord(Record):
    file: str | None
    url: str | None
    sha256: str


class DeviceRecord(Record):
    type: str
    name: str
    cuda_version: str | None
    cudnn_version: int | None
    deterministic_algorithms: bool
    cudnn_deterministic: bool | None
    cublas_workspace_config: str | None


class Training(Record):
    recipe: str
    epochs: int
    batch_size: int
    lr: Number
    weight_decay: Number
    seed: int
    train_subset: int | None
    # the training attack's eps ramp (defense.toml [train] eps_warmup_epochs); absent: none
    eps_warmup_epochs: Annotated[Number | SkipJsonSchema[None], NotNull] = None
    recipe_settings: FreeTable


class Provenance(Record):
    robustdeq_version: str
    torch_version: str
    python_version: str
    git_commit: str | None
    command: Annotated[str | SkipJsonSchema[None], NotNull] = None
    checkpoint: CheckpointRecord | None = None
    hardware: str
    device: Annotated[DeviceRecord | SkipJsonSchema[None], NotNull] = None
    seed: int
    training: Training | None
    attack_settings: dict[str, FreeTable]
    reduced_budget: bool
    nonstandard: FreeTable | None = None
    train_seconds: Number
    eval_seconds: Number
    attack_seconds: Annotated[dict[str, Number] | SkipJsonSchema[None], NotNull] = None


class FederatedRound(Record):
    round: int
    weights: list[Number]
    client_quality: list[Number | None]
    client_max_iter: list[int]
    client_evals_per_forward: list[Number]
    bytes_to_clients: int
    bytes_to_server: int
    clean_accuracy: Number | None
    pgd_accuracy: Number | None


class Federated(Record):
    fusion: str
    clients: int
    client_examples: list[int]
    client_labels: list[list[int]]
    monitor: str
    rounds: list[FederatedRound]


class Challenge(Record):
    """One outside attack checked by ``robustdeq challenge`` (docs/challenge.md): who submitted it and
    when, the file's SHA-256, how many adversarial examples it held, and the test-split indices of those
    verified as broken (``broken``) and, among them, of those robustdeq's own attacks had left robust
    (``new``) when it was recorded."""

    by: str
    when: str
    file_sha256: str
    submitted: int
    broken: list[int]
    new: list[int]


class EntryRecord(Record):
    """One leaderboard entry: one defense under one protocol (``<root>/<protocol>/<defense>.json``)."""

    schema_version: int
    defense: str
    defense_name: str
    paper: str
    model_family: str
    model_settings: FreeTable
    protocol: str
    protocol_version: int
    protocol_hash: str
    dataset: str
    threat_model: Threat
    n_examples: int
    clean_accuracy: Number
    robust_accuracy: Number
    attacks: dict[str, Number]
    flags: list[str]
    checks: dict[str, Number]
    eps_sweep: EpsSweep | None
    n_parameters: int
    forward_cost: Number | None
    solver: Solver | None
    per_example: Annotated[PerExample | SkipJsonSchema[None], NotNull] = None
    fidelity: FidelityRecord | None = None
    paper_evaluation: Annotated[list[PaperResult] | SkipJsonSchema[None], NotNull] = None
    provenance: Provenance
    federated: Annotated[Federated | SkipJsonSchema[None], NotNull] = None
    challenges: Annotated[list[Challenge] | SkipJsonSchema[None], NotNull] = None

    @model_validator(mode="after")
    def _invariants(self) -> EntryRecord:
        """What a leaderboard relies on beyond the types."""
        if self.schema_version not in READABLE_VERSIONS:
            known = ", ".join(map(str, READABLE_VERSIONS))
            raise ValueError(f"schema_version {self.schema_version} is not one of {known}")
        if self.schema_version >= 2:
            for key in ("per_example", "fidelity", "paper_evaluation"):
                if key not in self.model_fields_set:
                    raise ValueError(f"missing key {key!r}")
            for key in ("command", "checkpoint"):
                if key not in self.provenance.model_fields_set:
                    raise ValueError(f"provenance: missing key {key!r}")
        for key in ("clean_accuracy", "robust_accuracy"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key} must be in [0, 1]")
        if self.robust_accuracy > self.clean_accuracy:
            raise ValueError("robust_accuracy is above clean_accuracy")
        for name, acc in self.attacks.items():
            if not self.robust_accuracy <= acc <= self.clean_accuracy:
                raise ValueError(f"attacks.{name} must lie between robust and clean accuracy")
        if self.per_example is not None:
            check_outcomes(self.per_example.model_dump(), self.n_examples, self.clean_accuracy, self.robust_accuracy)
        return self


def split_checks(entry: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(the check re-runs inside the worst case, those outside it). A re-run is inside when the evaluation
    also recorded it as an attack run (the longer PGD: its breaks count), outside when it was only
    compared (the doubled solver or readout budget: ``*-solver-2x``, ``*-readout-2x``)."""
    inside = {k: v for k, v in entry["checks"].items() if k in entry["attacks"]}
    return inside, {k: v for k, v in entry["checks"].items() if k not in inside}


def robust_indices(entry: dict[str, Any]) -> list[int]:
    """The test-split indices robustdeq's own attacks left robust (from the per-example outcomes)."""
    outcomes = entry["per_example"]
    return [i for i, r in zip(decode_indices(outcomes["indices"]), unbits(outcomes["robust"]), strict=True) if r]


def outside_breaks(entry: dict[str, Any]) -> set[int]:
    """The examples robustdeq counted robust that an outside attack recorded by ``robustdeq challenge``
    broke (verified)."""
    if not entry.get("challenges") or not entry.get("per_example"):
        return set()
    broken = {i for c in entry["challenges"] for i in c["broken"]}
    return broken & set(robust_indices(entry))


def best_known(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry as tables show it: where outside attacks broke examples robustdeq counted robust, the
    robust accuracy is the per-example worst case over both (its own number kept as
    ``protocol_robust_accuracy``, ``best_known`` set) and the per-example outcomes say so; else the
    entry itself."""
    broken = outside_breaks(entry)
    if not broken:
        return entry
    outcomes = dict(entry["per_example"])
    indices = decode_indices(outcomes["indices"])
    outcomes["robust"] = bits([r and i not in broken for i, r in zip(indices, unbits(outcomes["robust"]), strict=True)])
    shown = {**entry, "per_example": outcomes, "best_known": True}
    shown["protocol_robust_accuracy"] = entry["robust_accuracy"]
    shown["robust_accuracy"] = (round(entry["robust_accuracy"] * entry["n_examples"]) - len(broken)) / entry[
        "n_examples"
    ]
    return shown


def validate_entry(entry: dict[str, Any], where: str = "entry") -> EntryRecord:
    """The entry as a checked record; a one-line :class:`RobustdeqError` naming the first bad key."""
    if not isinstance(entry, dict):
        raise RobustdeqError(f"{where}: expected object, got {type(entry).__name__}")
    return parse(EntryRecord, entry, where, style="json")


def entry_json(entry: dict[str, Any], where: str = "entry") -> str:
    """The entry's file text: validated, keys in the schema's order, numbers as written."""
    record = validate_entry(entry, where)
    return json.dumps(record.model_dump(exclude_unset=True), indent=2) + "\n"


class CheckpointMeta(Record):
    """The ``meta`` object a checkpoint carries (:func:`robustdeq.pipeline.checkpoint_meta`)."""

    defense: str
    manifest: str
    dataset: str
    protocol: str
    training: Training
    name: str | None = None
    model_settings: dict[str, Any] | None = None
    defense_path: str | None = None
    files: dict[str, str] | None = None
    train_seconds: Number | None = None
    federated: Federated | None = None
    robustdeq_version: str | None = None
    git_commit: str | None = None
    command: str | None = None
