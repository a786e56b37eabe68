"""The training-seed spread of a protocol's entries: ``<root>/<protocol>/seeds.json``.

A leaderboard row is one training run from one seed, and its 95% Wilson interval covers the choice of
test examples only. ``benchmarks/seed_variance.py`` retrains a few defenses with several seeds and
records here, per defense, the seeds, each seed's accuracies and their spread, under the protocol
version it measured them (retraining every seed is slow, so this may be older than the entries'); the
tables show the robust accuracy's spread beside the interval (:mod:`robustdeq.leaderboard`)::

    {"protocol": "digits-linf",
     "defenses": {"deq-pgd-at": {"protocol_version": 2, "protocol_hash": "6484...", "n_examples": 100,
                                 "seeds": [0, 1, 2],
                                 "per_seed": {"0": {"clean_accuracy": 0.9, "robust_accuracy": 0.46}, ...},
                                 "clean_accuracy": {"min": 0.87, "mean": 0.89, "max": 0.9, "std": 0.017,
                                                    "wilson_half_width": 0.062},
                                 "robust_accuracy": {...}}}}

Accuracies are fractions; ``std`` is the sample standard deviation across seeds, ``wilson_half_width``
the half-width of one evaluation's 95% Wilson interval at the mean. Read and written by
:mod:`robustdeq.records.store` (``read_seeds``, ``record_seeds``), validated both ways.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import model_validator

from robustdeq.errors import RobustdeqError
from robustdeq.records.parse import Number, Record, parse

SEEDS = "seeds.json"


class SeedAccuracies(Record):
    clean_accuracy: Number
    robust_accuracy: Number


class Spread(Record):
    min: Number
    mean: Number
    max: Number
    std: Number
    wilson_half_width: Number


class SeedSpread(Record):
    """One defense retrained with several seeds, each evaluated with the full protocol."""

    protocol_version: int
    protocol_hash: str
    n_examples: int
    seeds: list[int]
    per_seed: dict[str, SeedAccuracies]
    clean_accuracy: Spread
    robust_accuracy: Spread

    @model_validator(mode="after")
    def _consistent(self) -> SeedSpread:
        if not self.seeds or self.seeds != sorted(set(self.seeds)):
            raise ValueError(f"seeds must be distinct, in increasing order, and at least one: got {self.seeds}")
        if list(self.per_seed) != [str(s) for s in self.seeds]:
            raise ValueError(f"per_seed must hold exactly the seeds {self.seeds}, got {list(self.per_seed)}")
        for key in ("clean_accuracy", "robust_accuracy"):
            values = [getattr(a, key) for a in self.per_seed.values()]
            spread: Spread = getattr(self, key)
            if not all(0.0 <= v <= 1.0 for v in values):
                raise ValueError(f"per_seed: every {key} must be in [0, 1]")
            if (spread.min, spread.max) != (min(values), max(values)) or not spread.min <= spread.mean <= spread.max:
                raise ValueError(f"{key}: min and max must be the seeds' and the mean between them")
        if any(a.robust_accuracy > a.clean_accuracy for a in self.per_seed.values()):
            raise ValueError("per_seed: a robust_accuracy is above its clean_accuracy")
        return self


class SeedsFile(Record):
    """``seeds.json``: the seed spread of the defenses of one protocol that have one."""

    protocol: str
    defenses: dict[str, SeedSpread]


def validate_seeds(data: Any, where: str = "seeds") -> SeedsFile:
    """``data`` as a checked record; a one-line :class:`RobustdeqError` naming the first bad key."""
    if not isinstance(data, dict):
        raise RobustdeqError(f"{where}: expected object, got {type(data).__name__}")
    return parse(SeedsFile, data, where, style="json")


def seeds_json(data: dict[str, Any], where: str = "seeds") -> str:
    """The file's text: validated, keys in the schema's order, defenses in alphabetical order."""
    record = validate_seeds(data, where)
    out = record.model_dump()
    out["defenses"] = dict(sorted(out["defenses"].items()))
    return json.dumps(out, indent=2) + "\n"
