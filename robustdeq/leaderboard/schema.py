"""The leaderboard entry schema, enforced on every read and write.

Unknown keys, missing keys and wrong types are errors naming the key; numbers must be JSON
numbers (``true``/``false`` and strings are not numbers). See ``docs/entry.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from robustdeq.errors import RobustdeqError

SCHEMA_VERSION = 2
# Entries written before this round's regeneration (version 1) are read until it replaces them;
# the keys version 2 adds are optional for them (docs/entry.md).
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class Optional:
    inner: Any


@dataclass(frozen=True)
class MayBeAbsent:
    """A key only some entries have (e.g. ``federated``); when present it must fit ``inner``."""

    inner: Any


@dataclass(frozen=True)
class ListOf:
    inner: Any


@dataclass(frozen=True)
class DictOf:
    inner: Any


class FreeTable:
    """A JSON object whose keys are settings (recipe or attack specific): any JSON values."""


SOLVER_SETTINGS = {
    "f_solver": str,
    "f_max_iter": int,
    "f_tol": float,
    "f_stop_mode": str,
    "b_solver": str,
    "b_max_iter": int,
    "b_tol": float,
    "b_stop_mode": str,
    "train_grad": str,
    "attack_grad": str,
    "phantom_steps": int,
    "phantom_tau": float,
    "anderson_lam": float,
    "jac_reg": float,
}

FEDERATED_ROUND = {
    "round": int,
    "weights": ListOf(float),
    "client_quality": ListOf(Optional(float)),
    "client_max_iter": ListOf(int),
    "client_evals_per_forward": ListOf(float),
    "bytes_to_clients": int,
    "bytes_to_server": int,
    "clean_accuracy": Optional(float),
    "pgd_accuracy": Optional(float),
}

ENTRY_SCHEMA: dict[str, Any] = {
    "schema_version": int,
    "defense": str,
    "defense_name": str,
    "paper": str,
    "model_family": str,
    "model_settings": FreeTable,
    "protocol": str,
    "protocol_version": int,
    "protocol_hash": str,
    "dataset": str,
    "threat_model": {"norm": str, "eps": float},
    "n_examples": int,
    "clean_accuracy": float,
    "robust_accuracy": float,
    "attacks": DictOf(float),
    "flags": ListOf(str),
    "checks": DictOf(float),
    "eps_sweep": Optional({"attacks": ListOf(str), "points": ListOf({"eps": float, "robust_accuracy": float})}),
    "n_parameters": int,
    "forward_cost": Optional(float),
    "federated": MayBeAbsent(
        {
            "fusion": str,
            "clients": int,
            "client_examples": ListOf(int),
            "client_labels": ListOf(ListOf(int)),
            "monitor": str,
            "rounds": ListOf(FEDERATED_ROUND),
        }
    ),
    "fidelity": MayBeAbsent(
        Optional(
            {
                "title": str,
                "arxiv": str,
                "venue": str,
                "code": str,
                "data": str,
                "architecture": str,
                "training": str,
                "evaluation": str,
                "reported": str,
                "deviations": ListOf({"what": str, "kind": str, "why": str}),
            }
        )
    ),
    "paper_evaluation": MayBeAbsent(
        ListOf({"label": str, "description": str, "accuracy": float, "settings": FreeTable})
    ),
    "per_example": MayBeAbsent(
        {
            "indices": str,
            "clean_correct": str,
            "robust": str,
            "attack_order": ListOf(str),
            "broken_by": str,
        }
    ),
    "solver": Optional(
        {
            "settings": SOLVER_SETTINGS,
            "attack_grad_modes": ListOf(str),
            "nonconverged_clean": float,
            "nonconverged_adversarial": float,
            "mean_steps_clean": float,
            "mean_steps_adversarial": float,
            "spectral_radius": float,
            "residual_trace_clean": ListOf(float),
            "residual_trace_adversarial": ListOf(float),
        }
    ),
    "provenance": {
        "robustdeq_version": str,
        "torch_version": str,
        "python_version": str,
        "git_commit": Optional(str),
        "command": MayBeAbsent(str),
        "checkpoint": MayBeAbsent(Optional({"file": Optional(str), "url": Optional(str), "sha256": str})),
        "hardware": str,
        "device": MayBeAbsent(
            {
                "type": str,
                "name": str,
                "cuda_version": Optional(str),
                "cudnn_version": Optional(int),
                "deterministic_algorithms": bool,
                "cudnn_deterministic": Optional(bool),
                "cublas_workspace_config": Optional(str),
            }
        ),
        "seed": int,
        "training": Optional(
            {
                "recipe": str,
                "epochs": int,
                "batch_size": int,
                "lr": float,
                "weight_decay": float,
                "seed": int,
                "train_subset": Optional(int),
                "recipe_settings": FreeTable,
            }
        ),
        "attack_settings": DictOf(FreeTable),
        "reduced_budget": bool,
        "nonstandard": MayBeAbsent(Optional(FreeTable)),
        "train_seconds": float,
        "eval_seconds": float,
        "attack_seconds": MayBeAbsent(DictOf(float)),
    },
}


def _type_name(schema: Any) -> str:
    if isinstance(schema, Optional):
        return f"{_type_name(schema.inner)} or null"
    if isinstance(schema, ListOf):
        return f"list of {_type_name(schema.inner)}"
    if isinstance(schema, MayBeAbsent):
        return _type_name(schema.inner)
    if isinstance(schema, (DictOf, dict)) or schema is FreeTable:
        return "object"
    return {float: "number", int: "integer", str: "string", bool: "boolean"}[schema]


def validate(value: Any, schema: Any = None, where: str = "entry") -> None:
    """Raise :class:`RobustdeqError` naming the first key that does not fit ``schema``."""
    schema = ENTRY_SCHEMA if schema is None else schema

    def fail() -> None:
        raise RobustdeqError(f"{where}: expected {_type_name(schema)}, got {type(value).__name__} {value!r:.60}")

    if isinstance(schema, Optional):
        if value is not None:
            validate(value, schema.inner, where)
        return
    if schema is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail()
        return
    if schema is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return
    if schema in (str, bool):
        if not isinstance(value, schema):
            fail()
        return
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            fail()
        for i, item in enumerate(value):
            validate(item, schema.inner, f"{where}[{i}]")
        return
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        fail()
    if schema is FreeTable:
        return
    if isinstance(schema, DictOf):
        for key, item in value.items():
            validate(item, schema.inner, f"{where}.{key}")
        return
    for key in value:
        if key not in schema:
            raise RobustdeqError(f"{where}: unknown key {key!r}")
    for key, sub in schema.items():
        if isinstance(sub, MayBeAbsent):
            if key in value:
                validate(value[key], sub.inner, f"{where}.{key}")
            continue
        if key not in value:
            raise RobustdeqError(f"{where}: missing key {key!r}")
        validate(value[key], sub, f"{where}.{key}")


def validate_entry(entry: dict[str, Any], where: str = "entry") -> None:
    """Schema check plus the invariants a leaderboard relies on."""
    validate(entry, ENTRY_SCHEMA, where)
    if entry["schema_version"] not in READABLE_VERSIONS:
        known = ", ".join(map(str, READABLE_VERSIONS))
        raise RobustdeqError(f"{where}: schema_version {entry['schema_version']} is not one of {known}")
    if entry["schema_version"] >= 2:
        for key in ("per_example", "fidelity", "paper_evaluation"):
            if key not in entry:
                raise RobustdeqError(f"{where}: missing key {key!r}")
        for key in ("command", "checkpoint"):
            if key not in entry["provenance"]:
                raise RobustdeqError(f"{where}.provenance: missing key {key!r}")
    for key in ("clean_accuracy", "robust_accuracy"):
        if not 0.0 <= entry[key] <= 1.0:
            raise RobustdeqError(f"{where}.{key}: must be in [0, 1]")
    if entry["robust_accuracy"] > entry["clean_accuracy"]:
        raise RobustdeqError(f"{where}: robust_accuracy is above clean_accuracy")
    for name, acc in entry["attacks"].items():
        if not entry["robust_accuracy"] <= acc <= entry["clean_accuracy"]:
            raise RobustdeqError(f"{where}.attacks.{name}: must lie between robust and clean accuracy")
    if "per_example" in entry:
        from robustdeq.leaderboard.outcomes import check_outcomes

        check_outcomes(entry, where)
