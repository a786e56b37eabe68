"""The protocol record: ``attacks/<id>.toml``, a threat model, a test subset and an attack suite.

The file is read by :class:`ProtocolFile` (strict: unknown keys and wrong types are one-line
errors; ``docs/schema/protocol.schema.json`` is generated from it) into the :class:`ProtocolSpec`
the evaluation runs. The protocol file's content hash goes into every leaderboard entry. Names
the protocol uses but other layers own (the data set, the attacks) are checked where they are used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from robustdeq.errors import RobustdeqError
from robustdeq.records.parse import Record, parse, read_toml
from robustdeq.records.paths import ATTACKS_DIR, ID_PATTERN
from robustdeq.records.solver import ATTACK_MODES_HELP, is_attack_mode
from robustdeq.records.threat import ThreatModel


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a protocol: its registered name, settings, and (for DEQs) gradient modes.

    ``grad_modes``: run the attack once per mode on a DEQ (``ift``, ``unroll``, ``phantom``);
    the run in the model's own attack-time mode keeps the plain name, the others are named
    ``<name>@<mode>``. Models without an equilibrium layer run it once.
    """

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    grad_modes: tuple[str, ...] = ()
    label: str = ""  # the name results are kept under; defaults to ``name``
    grad: str | None = None  # one attack-time gradient mode for a single run (a paper's own evaluation)
    loop: str | None = None  # one inference-loop gradient for a single run
    description: str = ""  # what the run is, for a reader (a paper's own evaluation)

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Checks:
    """The protocol's ``[checks]``: reliability re-runs, each ending in a flag when it fails.

    ``more_iterations``: the named attack again with twice its ``steps``; part of the worst
    case; flag ``more_iterations_stronger`` when it lowers accuracy by more than ``margin``.
    ``solver_budget``: for DEQs, the clean prediction and the named attack again with twice the
    forward and backward solver iterations; flag ``solver_budget_sensitive`` when either
    accuracy moves by more than ``margin`` (a check only, not part of the worst case).
    A ``transfer`` attack in the suite that beats every white-box attack by more than ``margin``
    flags ``transfer_stronger_than_whitebox``; a ``square`` attack, ``square_stronger_than_whitebox``.
    """

    more_iterations: str | None = None
    solver_budget: str | None = None
    margin: float = 0.02


@dataclass(frozen=True)
class ProtocolSpec:
    id: str
    version: int
    dataset: str
    threat: ThreatModel
    n_examples: int
    attacks: tuple[AttackSpec, ...]
    subset_seed: int | None = None
    batch_size: int = 250
    seed: int = 0
    warm_start: bool = False
    paper_evaluations: bool = False  # also run each defense's own paper's evaluation (outside the worst case)
    votes: int = 5  # a randomised model: forwards per prediction, majority counts
    eot_draws: int = 20  # a randomised model: forwards averaged per gradient (EOT)
    checks: Checks = Checks()
    eps_sweep: tuple[float, ...] = ()
    eps_sweep_attacks: tuple[str, ...] = ("pgd",)
    description: str = ""
    hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "hash": self.hash,
            "dataset": self.dataset,
            "threat_model": {"norm": self.threat.norm, "eps": self.threat.eps},
            "n_examples": self.n_examples,
            "subset_seed": self.subset_seed,
            "warm_start": self.warm_start,
            "paper_evaluations": self.paper_evaluations,
            "votes": self.votes,
            "eot_draws": self.eot_draws,
            "checks": asdict(self.checks),
            "attacks": [
                {"name": a.name, **({"label": a.label} if a.label else {}), **a.settings} for a in self.attacks
            ],
            "eps_sweep": {"eps": list(self.eps_sweep), "attacks": list(self.eps_sweep_attacks)},
        }


class SubsetTable(Record):
    """``[subset]``: the first ``n_examples`` test examples, or ``n_examples`` from a permutation seeded by ``seed``."""

    n_examples: int = Field(ge=1)
    seed: int | None = None


class EvaluationTable(Record):
    """``[evaluation]``: how the attacks run."""

    batch_size: int = Field(250, ge=1)
    seed: int = 0
    warm_start: bool = False
    paper_evaluations: bool = False
    votes: int = 5
    eot_draws: int = 20

    @model_validator(mode="after")
    def _votes(self) -> EvaluationTable:
        if self.votes < 1 or self.votes % 2 == 0 or self.eot_draws < 1:
            raise ValueError("votes must be odd and >= 1, eot_draws >= 1")
        return self


class AttackTable(Record):
    """``[[attacks]]``: a registered attack's ``name``, its DEQ ``grad_modes``, the ``label`` its results
    are kept under (default: the name; two attacks of one name need labels), and its own settings
    (every other key, checked by the attack)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    name: str
    label: str | None = None
    grad_modes: list[str] = []

    @model_validator(mode="after")
    def _modes(self) -> AttackTable:
        if self.label is not None and not ID_PATTERN.fullmatch(self.label):
            raise ValueError(f"attack {self.name}: label {self.label!r} is not a plain lowercase name")
        unknown = [m for m in self.grad_modes if not is_attack_mode(m)]
        if unknown:
            raise ValueError(f"attack {self.name}: unknown grad_modes {unknown} (known: {ATTACK_MODES_HELP})")
        return self

    def to_spec(self) -> AttackSpec:
        return AttackSpec(self.name, dict(self.model_extra or {}), tuple(self.grad_modes), label=self.label or "")


class ChecksTable(Record):
    """``[checks]``: see :class:`Checks`."""

    more_iterations: str | None = None
    solver_budget: str | None = None
    margin: float = 0.02


class EpsSweepTable(Record):
    """``[eps_sweep]``: robust accuracy of ``attacks`` at each of ``eps`` (increasing, positive)."""

    eps: list[float] = []
    attacks: list[str] = []

    @model_validator(mode="after")
    def _increasing(self) -> EpsSweepTable:
        if any(e <= 0 for e in self.eps) or self.eps != sorted(self.eps):
            raise ValueError("eps must be positive and increasing")
        return self


class ProtocolFile(Record):
    """A protocol file, ``attacks/<id>.toml``. ``id`` defaults to the file's name."""

    id: str | None = None
    version: int
    dataset: str
    description: str = ""
    threat_model: ThreatModel
    subset: SubsetTable
    evaluation: EvaluationTable = EvaluationTable()
    attacks: list[AttackTable] = []
    checks: ChecksTable = ChecksTable()
    eps_sweep: EpsSweepTable = EpsSweepTable()

    @model_validator(mode="before")
    @classmethod
    def _plain_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            check_id(data["id"])
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ProtocolFile:
        if not self.attacks:
            raise ValueError("the protocol lists no [[attacks]]")
        keys = [a.label or a.name for a in self.attacks]
        if len(set(keys)) < len(keys):
            raise ValueError("two [[attacks]] share a name; give each a distinct label")
        for key in ("more_iterations", "solver_budget"):
            target = getattr(self.checks, key)
            if target is not None and target not in keys:
                raise ValueError(f"[checks] {key}: {target!r} is not one of the protocol's attacks (by label or name)")
        if self.eps_sweep.eps and not set(self.eps_sweep.attacks or ["pgd"]) <= set(keys):
            raise ValueError(f"[eps_sweep]: attacks must be among the protocol's attacks ({', '.join(keys)})")
        return self

    def to_spec(self, default_id: str, digest: str) -> ProtocolSpec:
        evaluation = self.evaluation
        return ProtocolSpec(
            id=self.id or default_id,
            version=self.version,
            dataset=self.dataset,
            threat=self.threat_model,
            n_examples=self.subset.n_examples,
            attacks=tuple(a.to_spec() for a in self.attacks),
            eps_sweep=tuple(float(e) for e in self.eps_sweep.eps),
            eps_sweep_attacks=tuple(self.eps_sweep.attacks) or ("pgd",),
            subset_seed=self.subset.seed,
            batch_size=evaluation.batch_size,
            seed=evaluation.seed,
            warm_start=evaluation.warm_start,
            paper_evaluations=evaluation.paper_evaluations,
            votes=evaluation.votes,
            eot_draws=evaluation.eot_draws,
            checks=Checks(self.checks.more_iterations, self.checks.solver_budget, self.checks.margin),
            description=self.description,
            hash=digest,
        )


def check_id(pid: str) -> str:
    """A protocol id names its leaderboard folder, so it must be a plain lowercase name."""
    if not ID_PATTERN.fullmatch(pid):
        raise ValueError(f"protocol id {pid!r} is not a plain lowercase name (a-z, 0-9, '-', '_', '.')")
    return pid


def load_protocol(path: Path) -> ProtocolSpec:
    data, digest = read_toml(path)
    spec = parse(ProtocolFile, data, str(path)).to_spec(path.stem, digest)
    try:
        check_id(spec.id)
    except ValueError as exc:
        raise RobustdeqError(f"{path}: {exc}") from None
    return spec


def list_protocols(root: Path = ATTACKS_DIR) -> list[str]:
    return sorted(p.stem for p in root.glob("*.toml")) if root.is_dir() else []


def find_protocol(name_or_path: str, root: Path = ATTACKS_DIR) -> ProtocolSpec:
    """A protocol by id (``attacks/<id>.toml``) or by path to a TOML file."""
    if (root / f"{name_or_path}.toml").is_file():
        return load_protocol(root / f"{name_or_path}.toml")
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.is_file():
        return load_protocol(candidate)
    known = ", ".join(list_protocols(root)) or "none"
    raise RobustdeqError(f"unknown protocol {name_or_path!r} (known: {known})")
