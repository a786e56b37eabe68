"""The defense record: a folder ``defenses/<id>/`` with ``defense.toml`` (and a model.py or weights)::

    name = "DEQ, PGD adversarial training"
    paper = "https://arxiv.org/abs/1909.01377"
    suite = "core"     # or "extended": which ``robustdeq bench --suite`` runs it
    authors = ["..."]
    description = "..."
    [model]            # family = a registered model family; other keys are its settings
    family = "deq"
    channels = 16
    [solver]           # DEQ families only: SolverSpec fields (f_*, b_*, gradient modes)
    f_solver = "anderson"
    [train]            # recipe + common training settings
    recipe = "pgd_at"
    epochs = 20
    [train.pgd_at]     # the recipe's own settings
    steps = 7
    [datasets.mnist]   # what changes on one data set: [model], [solver], [train] merged key by key,
    description = "..."            # and the description and fidelity deviations replaced
    train = { epochs = 4 }

The manifest is read by :class:`DefenseFile` (strict: unknown keys and wrong types are one-line
errors; ``docs/schema/defense.schema.json`` is generated from it) into the :class:`DefenseSpec` the
pipeline runs. The names it uses but other layers own (the model family, the recipe and their
settings) are checked where they are used: by the model registry and the training recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, model_validator

from robustdeq.errors import RobustdeqError
from robustdeq.records.parse import Record, parse, read_toml
from robustdeq.records.paths import DEFENSES_DIR, ID_PATTERN
from robustdeq.records.protocol import AttackSpec
from robustdeq.records.solver import ATTACK_MODES_HELP, SolverSpec, is_attack_mode

MANIFEST = "defense.toml"
# ``robustdeq bench`` runs the core suite by default (README command 1, within 10 minutes on two
# cores); the extended suite holds further reference entries (``--suite extended`` or ``all``).
SUITES = ("core", "extended")
DEVIATION_KINDS = ("cpu-budget", "unknown-in-paper", "our-choice")


@dataclass(frozen=True)
class ModelSpec:
    """A registered ``family`` with its settings, or ``factory = "model.py:function"`` in the
    defense folder (then ``family`` is ``"model.py"``); settings are passed as keyword arguments."""

    family: str
    settings: dict[str, Any] = field(default_factory=dict)
    factory: str | None = None


@dataclass(frozen=True)
class TrainSpec:
    recipe: str = "standard"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    train_subset: int | None = None
    # the training attack's eps and step sizes ramp linearly from 0 to full over the first
    # ``eps_warmup_epochs`` epochs (0: full from the first batch)
    eps_warmup_epochs: float = 0.0
    recipe_settings: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # a safetensors file in the defense folder: load it, do not train
    # sub-tables of [train] named after no recipe in use: refused where the recipe is built, after
    # its name is checked (a misspelt recipe is reported as such, not as a stray table)
    stray_tables: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The training record of an entry (a shipped checkpoint records no training budget)."""
        if self.checkpoint is not None:
            return {
                "recipe": "checkpoint",
                "epochs": 0,
                "batch_size": 0,
                "lr": 0.0,
                "weight_decay": 0.0,
                "seed": self.seed,
                "train_subset": None,
                "recipe_settings": {"checkpoint": self.checkpoint},
            }
        warmup = {"eps_warmup_epochs": self.eps_warmup_epochs} if self.eps_warmup_epochs else {}
        return {
            "recipe": self.recipe,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "train_subset": self.train_subset,
            **warmup,  # written only when set, so entries trained without one read as before
            "recipe_settings": dict(self.recipe_settings),
        }


class Deviation(Record):
    """One way a reference defense departs from its paper: ``what`` differs, of which ``kind``
    (scaled down for the CPU, not stated in the paper, or robustdeq's choice), and ``why``."""

    what: str
    kind: Literal["cpu-budget", "unknown-in-paper", "our-choice"]
    why: str


class PaperEvaluation(Record):
    """``[[fidelity.paper_evaluation]]``: an attack the paper itself evaluated with, run beside the
    protocol's, outside the worst case; every key but these is the attack's own setting."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    label: str
    description: str
    name: str
    grad: str | None = None
    loop_gradient: str | None = None

    @model_validator(mode="after")
    def _names(self) -> PaperEvaluation:
        if self.grad is not None and not is_attack_mode(self.grad):
            raise ValueError(f"unknown grad {self.grad!r} (known: {ATTACK_MODES_HELP})")
        if not ID_PATTERN.fullmatch(self.label):
            raise ValueError(f"label {self.label!r} is not a plain lowercase name")
        return self

    def to_spec(self) -> AttackSpec:
        settings = dict(self.model_extra or {})
        return AttackSpec(
            self.name,
            settings,
            (),
            label=f"paper:{self.label}",
            grad=self.grad,
            loop=self.loop_gradient,
            description=self.description,
        )


class Fidelity(Record):
    """A reference defense's record of its paper (the manifest's ``[fidelity]`` table): what the
    paper is and did, the deviations, and the paper's own evaluation when robustdeq runs it beside
    the protocol's (``[[fidelity.paper_evaluation]]``: attacks outside the worst case).
    ``docs/fidelity.md`` is rendered from these records (``robustdeq fidelity``)."""

    title: str
    arxiv: str  # "" for a baseline without a paper of its own
    venue: str
    code: str = ""
    data: str = ""
    architecture: str = ""
    training: str = ""
    evaluation: str = ""
    reported: str = ""
    deviations: list[Deviation] = []
    paper_evaluation: list[PaperEvaluation] = []

    def paper_attacks(self) -> tuple[AttackSpec, ...]:
        """The paper's own evaluation as attacks for the runner (kept under ``paper:<label>``)."""
        return tuple(e.to_spec() for e in self.paper_evaluation)

    def describe(self, label: str) -> str:
        """The description of the paper evaluation kept under ``label``."""
        return next((e.description for e in self.paper_evaluation if f"paper:{e.label}" == label), "")

    def to_dict(self) -> dict[str, Any]:
        """The entry's ``fidelity`` object (the paper evaluation goes into ``paper_evaluation``)."""
        return self.model_dump(exclude={"paper_evaluation"})


class ModelTable(Record):
    """``[model]``: exactly one of ``family`` (a registered family) or ``factory`` ("model.py:function"
    in the defense folder); every other key is a setting passed to it."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    family: str | None = None
    factory: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelTable:
        if (self.family is None) == (self.factory is None):
            raise ValueError("give exactly one of 'family' (registered) or 'factory' (model.py)")
        factory = self.factory
        if factory is not None and (":" not in factory or not factory.split(":")[0].endswith(".py")):
            raise ValueError(f'factory must look like "model.py:make_model", got {factory!r}')
        return self

    def to_spec(self) -> ModelSpec:
        return ModelSpec(self.family or "model.py", dict(self.model_extra or {}), self.factory)


class TrainTable(Record):
    """``[train]``: the recipe and the settings every recipe shares; the sub-table named after the
    recipe (``[train.pgd_at]``) holds the recipe's own settings, checked by the recipe. A shipped
    ``checkpoint`` (a safetensors file in the defense folder) replaces training."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "additionalProperties": {"type": "object", "description": "the settings of the recipe named by `recipe`"}
        },
    )

    recipe: str | None = None
    epochs: int = TrainSpec.epochs
    batch_size: int = TrainSpec.batch_size
    lr: float = TrainSpec.lr
    weight_decay: float = TrainSpec.weight_decay
    seed: int = TrainSpec.seed
    train_subset: int | None = None
    eps_warmup_epochs: float = 0.0
    checkpoint: str | None = None

    @model_validator(mode="after")
    def _settings(self) -> TrainTable:
        tables = dict(self.model_extra or {})
        if self.recipe is None and self.checkpoint is None and tables:
            first = next(iter(tables))
            raise ValueError(f"missing field 'recipe' (the recipe whose settings [train.{first}] holds)")
        for key, value in tables.items():
            if self.checkpoint is not None and key != self.recipe:
                raise ValueError(f"unknown field {key!r}")  # nothing is trained, so no recipe checks it
            if not isinstance(value, dict):
                raise ValueError(f"field {key!r} must be a table of the recipe's settings, got {type(value).__name__}")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or self.eps_warmup_epochs < 0:
            raise ValueError("epochs >= 0, batch_size >= 1, lr > 0 and eps_warmup_epochs >= 0 are required")
        return self

    @property
    def effective_recipe(self) -> str:
        return self.recipe or ("checkpoint" if self.checkpoint else "standard")

    def to_spec(self) -> TrainSpec:
        recipe = self.effective_recipe
        tables = dict(self.model_extra or {})
        settings = {} if self.checkpoint is not None else dict(tables.get(recipe, {}))
        return TrainSpec(
            recipe=recipe,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=float(self.lr),
            weight_decay=float(self.weight_decay),
            seed=self.seed,
            train_subset=self.train_subset,
            eps_warmup_epochs=float(self.eps_warmup_epochs),
            recipe_settings=settings,
            checkpoint=self.checkpoint,
            stray_tables=tuple(key for key in tables if key != recipe),
        )


class DatasetTable(Record):
    """``[datasets.<name>]``: what changes for one data set (MNIST's sizes and budgets, say). Its
    ``model``, ``solver`` and ``train`` tables are merged over the manifest's key by key (a recipe's
    sub-table too); ``description`` and ``deviations`` replace the manifest's description and
    ``[[fidelity.deviations]]`` on that data set (the deviations are the data set's own)."""

    description: str | None = None
    model: dict[str, Any] = {}
    solver: dict[str, Any] = {}
    train: dict[str, Any] = {}
    deviations: list[Deviation] | None = None


class DefenseFile(Record):
    """A defense manifest, ``defense.toml`` (see the module docstring)."""

    name: str
    paper: str = ""
    suite: Literal["core", "extended"] = "core"
    authors: list[str] = []
    description: str = ""
    protocols: list[str] = []
    torchdeq_adapter: bool = True  # adapt torchdeq DEQ modules (robustdeq/deq/torchdeq_adapter.py)
    model: ModelTable
    solver: SolverSpec | None = None
    train: TrainTable
    fidelity: Fidelity | None = None  # required of the reference defenses in defenses/
    datasets: dict[str, DatasetTable] = {}


@dataclass(frozen=True)
class DefenseSpec:
    id: str
    name: str
    model: ModelSpec
    train: TrainSpec
    solver: SolverSpec | None = None
    paper: str = ""
    authors: tuple[str, ...] = ()
    description: str = ""
    path: Path | None = None
    protocols: tuple[str, ...] = ()
    suite: str = "core"
    fidelity: Fidelity | None = None  # required of the reference defenses in defenses/
    manifest: str = ""  # the manifest's text, carried by checkpoints
    files: tuple[tuple[str, str], ...] = ()  # (name, text) of the factory's source file, carried too
    torchdeq_adapter: bool = True  # adapt torchdeq DEQ modules (robustdeq/deq/torchdeq_adapter.py)
    dataset: str | None = None  # the [datasets.<name>] variant this is; None: the manifest's defaults
    # ("", defaults) and (name, variant) for every [datasets.<name>] table: what :meth:`on` picks from
    variants: tuple[tuple[str, DefenseSpec], ...] = ()

    def on(self, dataset: str) -> DefenseSpec:
        """This defense as it is trained and evaluated on ``dataset``: its ``[datasets.<dataset>]``
        variant, or the manifest's defaults when it has none. What was changed on this spec after it
        was read (a sweep's model settings, another training seed) is carried over to the variant,
        setting by setting."""
        variants = dict(self.variants)
        if self.dataset == dataset or not variants:
            return self
        current = variants[self.dataset or ""]  # the variant this spec was read as
        chosen = variants.get(dataset, variants[""])
        return replace(
            chosen,
            **{key: getattr(self, key) for key in UNVARIED},
            model=replace(
                chosen.model,
                settings={**chosen.model.settings, **_changed(self.model.settings, current.model.settings)},
            ),
            train=replace(chosen.train, **_changed(vars(self.train), vars(current.train))),
            solver=_carried_solver(self.solver, current.solver, chosen.solver),
            manifest=self.manifest,
            files=self.files,
            variants=self.variants,
        )

    @property
    def datasets(self) -> tuple[str, ...]:
        """The data sets with a variant of their own."""
        return tuple(name for name, _ in self.variants if name)


# What no [datasets.<name>] table sets: a spec's own, as it may have been changed after it was read.
UNVARIED = ("id", "name", "paper", "authors", "path", "protocols", "suite", "torchdeq_adapter")


def _carried_solver(now: SolverSpec | None, read: SolverSpec | None, chosen: SolverSpec | None) -> SolverSpec | None:
    """``chosen`` (a variant's solver) with what ``now`` changed since it was ``read``; ``now`` when the
    variant has none."""
    if chosen is None:
        return now
    if now is None or read is None:
        return chosen
    return chosen.model_copy(update=_changed(now.model_dump(), read.model_dump()))


def _changed(now: dict[str, Any], read: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``now`` that differ from those it was ``read`` with."""
    return {key: value for key, value in now.items() if key not in read or read[key] != value}


def defense_id(folder: Path) -> str:
    """The id of a defense folder: its resolved name (``.`` names the current folder), which must be
    a plain lowercase name (letters, digits, ``-``, ``_``, ``.``; starting with a letter or digit)."""
    name = folder.resolve().name
    if not ID_PATTERN.fullmatch(name):
        raise RobustdeqError(
            f"{folder}: defense id {name!r} is not a plain lowercase name (a-z, 0-9, '-', '_', '.'; "
            "starting with a letter or digit); rename the folder"
        )
    return name


def load_defense(path: Path, reference: bool = False) -> DefenseSpec:
    """Read ``<path>/defense.toml`` (``path`` may also be the manifest itself). A reference defense
    (``reference``, or any folder in ``defenses/``) must carry a ``[fidelity]`` record."""
    folder = path.parent if path.name == MANIFEST else path
    manifest = folder / MANIFEST
    if not folder.is_dir():
        raise RobustdeqError(f"{folder}: no such defense folder")
    if not manifest.is_file():
        raise RobustdeqError(f"{folder}: missing manifest {MANIFEST}")
    data, _ = read_toml(manifest)
    spec = parse_defense(data, defense_id(folder), folder, str(manifest))
    if spec.fidelity is None and (reference or folder.resolve().parent == DEFENSES_DIR.resolve()):
        raise RobustdeqError(
            f"{manifest}: a reference defense needs a [fidelity] record of its paper (docs/fidelity.md)"
        )
    files: tuple[tuple[str, str], ...] = ()
    if spec.model.factory is not None:
        source = folder / spec.model.factory.split(":")[0]
        if source.is_file():
            files = ((source.name, source.read_text(encoding="utf-8")),)
    return replace(spec, manifest=manifest.read_text(encoding="utf-8"), files=files)


def parse_defense(data: dict[str, Any], defense: str, folder: Path | None, where: str) -> DefenseSpec:
    """A defense spec from a parsed manifest (``where`` names it in error messages), with a variant
    for every ``[datasets.<name>]`` table (each checked as a whole manifest)."""
    manifest = parse(DefenseFile, data, where)
    defaults = _spec(manifest, defense, folder)
    if not manifest.datasets:
        return defaults
    variants: list[tuple[str, DefenseSpec]] = [("", defaults)]
    for name, table in manifest.datasets.items():
        merged = _merge({k: v for k, v in data.items() if k != "datasets"}, table)
        variant = _spec(parse(DefenseFile, merged, f"{where} [datasets.{name}]"), defense, folder)
        variants.append((name, replace(variant, dataset=name)))
    return replace(defaults, variants=tuple(variants))


def _merge(data: dict[str, Any], table: DatasetTable) -> dict[str, Any]:
    """The manifest's data with one ``[datasets.<name>]`` table applied (see :class:`DatasetTable`)."""
    tables = {"model": table.model, "solver": table.solver, "train": table.train}
    merged = _deep_merge(data, {key: value for key, value in tables.items() if value})
    if table.description is not None:
        merged["description"] = table.description
    if table.deviations is not None:
        merged["fidelity"] = {**merged.get("fidelity", {}), "deviations": [d.model_dump() for d in table.deviations]}
    return merged


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _spec(manifest: DefenseFile, defense: str, folder: Path | None) -> DefenseSpec:
    return DefenseSpec(
        id=defense,
        name=manifest.name,
        model=manifest.model.to_spec(),
        train=manifest.train.to_spec(),
        solver=manifest.solver,
        paper=manifest.paper,
        authors=tuple(manifest.authors),
        description=manifest.description,
        path=folder,
        protocols=tuple(manifest.protocols),
        suite=manifest.suite,
        torchdeq_adapter=manifest.torchdeq_adapter,
        fidelity=manifest.fidelity,
    )


def list_defenses(root: Path = DEFENSES_DIR, suite: str = "all") -> list[str]:
    """Ids of the defense folders under ``root`` (those holding a manifest), sorted; with
    ``suite`` ``core`` or ``extended``, only those whose manifest names that suite."""
    if suite != "all" and suite not in SUITES:
        raise RobustdeqError(f"unknown suite {suite!r} (known: {', '.join(SUITES)}, all)")
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())
    if suite == "all":
        return names
    return [name for name in names if load_defense(root / name, reference=True).suite == suite]


def find_defense(name_or_path: str, root: Path = DEFENSES_DIR) -> DefenseSpec:
    """A defense by id (a folder under ``root``: a reference defense) or by path to its folder."""
    candidate = Path(name_or_path)
    # Only a plain id names a folder under root: root / "/abs/path" would be the path itself.
    if ID_PATTERN.fullmatch(name_or_path) and (root / name_or_path / MANIFEST).is_file():
        return load_defense(root / name_or_path, reference=True)
    if candidate.is_dir() or candidate.name == MANIFEST:
        return load_defense(candidate)
    known = ", ".join(list_defenses(root)) or "none"
    raise RobustdeqError(f"unknown defense {name_or_path!r} (known: {known})")
