"""Typed, frozen specs read from TOML: a defense manifest and an evaluation protocol.

A defense is a folder ``defenses/<id>/`` with ``defense.toml``::

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

A protocol is ``attacks/<id>.toml``: threat model, test subset and the attack suite. Its
content hash goes into every leaderboard entry.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robustdeq.config import Table, read_toml
from robustdeq.deq import GRAD_MODES, SolverSpec, is_attack_mode
from robustdeq.errors import RobustdeqError
from robustdeq.threat import ThreatModel

MANIFEST = "defense.toml"
# ``robustdeq bench`` runs the core suite by default (README command 1, within 10 minutes on two
# cores); the extended suite holds further reference entries (``--suite extended`` or ``all``).
SUITES = ("core", "extended")


def repo_folder(name: str) -> Path:
    """``./<name>`` when run from a checkout, else the checkout this package was installed from."""
    here = Path(name)
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / name


DEFENSES_DIR = repo_folder("defenses")
ATTACKS_DIR = repo_folder("attacks")


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
    recipe_settings: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # a safetensors file in the defense folder: load it, do not train

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
        return {
            "recipe": self.recipe,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "train_subset": self.train_subset,
            "recipe_settings": dict(self.recipe_settings),
        }


DEVIATION_KINDS = ("cpu-budget", "unknown-in-paper", "our-choice")


@dataclass(frozen=True)
class Deviation:
    """One way a reference defense departs from its paper: ``what`` differs, of which ``kind``
    (scaled down for the CPU, not stated in the paper, or robustdeq's choice), and ``why``."""

    what: str
    kind: str
    why: str


@dataclass(frozen=True)
class Fidelity:
    """A reference defense's record of its paper (the manifest's ``[fidelity]`` table): what the
    paper is and did, the deviations, and the paper's own evaluation when robustdeq runs it beside
    the protocol's (``[[fidelity.paper_evaluation]]``: attacks outside the worst case).
    ``docs/fidelity.md`` is rendered from these records (``robustdeq fidelity``)."""

    title: str
    arxiv: str  # "" for a baseline without a paper of its own
    venue: str
    code: str
    data: str
    architecture: str
    training: str
    evaluation: str
    reported: str
    deviations: tuple[Deviation, ...] = ()
    paper_evaluation: tuple[AttackSpec, ...] = ()

    def describe(self, label: str) -> str:
        """The description of the paper evaluation kept under ``label``."""
        return next((e.description for e in self.paper_evaluation if e.key == label), "")

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("title", "arxiv", "venue", "code", "data", "architecture", "training")}
        out.update(evaluation=self.evaluation, reported=self.reported)
        out["deviations"] = [asdict(d) for d in self.deviations]
        return out


def _fidelity(table: Table) -> Fidelity:
    fields = {
        key: table.text(key, required=key in ("title", "arxiv", "venue"), default="")
        for key in ("title", "arxiv", "venue", "code", "data", "architecture", "training", "evaluation", "reported")
    }
    deviations = []
    for item in table.tables("deviations"):
        kind = item.choice("kind", DEVIATION_KINDS)
        deviations.append(Deviation(item.text("what", required=True), kind, item.text("why", required=True)))
        item.done()
    evaluations = []
    for item in table.tables("paper_evaluation"):
        label = item.text("label", required=True)
        description = item.text("description", required=True)
        name = item.text("name", required=True)
        grad, loop = item.text("grad", None), item.text("loop_gradient", None)
        if grad is not None and not is_attack_mode(grad):
            raise RobustdeqError(f"{item.where}: unknown grad {grad!r}")
        if not ID_PATTERN.fullmatch(label):
            raise RobustdeqError(f"{item.where}: label {label!r} is not a plain lowercase name")
        spec = AttackSpec(name, item.rest(), (), label=f"paper:{label}", grad=grad, loop=loop, description=description)
        evaluations.append(spec)
    table.done()
    return Fidelity(**fields, deviations=tuple(deviations), paper_evaluation=tuple(evaluations))


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


def _solver_spec(table: Table) -> SolverSpec:
    defaults = SolverSpec()
    kwargs: dict[str, Any] = {}
    for name, value in defaults.to_dict().items():
        if isinstance(value, bool):
            kwargs[name] = table.flag(name, value)
        elif isinstance(value, int):
            kwargs[name] = table.integer(name, value)
        elif isinstance(value, float):
            kwargs[name] = table.number(name, value)
        else:
            kwargs[name] = table.text(name, value)
    table.done()
    return SolverSpec(**kwargs)


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


ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")


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
    return dataclasses.replace(spec, manifest=manifest.read_text(encoding="utf-8"), files=files)


def parse_defense(data: dict[str, Any], defense: str, folder: Path | None, where: str) -> DefenseSpec:
    """A defense spec from a parsed manifest (``where`` names it in error messages)."""
    top = Table(data, where)
    manifest = where
    name = top.text("name", required=True)
    paper = top.text("paper", "")
    description = top.text("description", "")
    authors = top.texts("authors")
    suite = top.text("suite", "core")
    adapter = top.flag("torchdeq_adapter", True)
    if suite not in SUITES:
        raise RobustdeqError(f"{manifest}: suite must be one of {', '.join(SUITES)}, got {suite!r}")

    model_table = top.table("model", required=True)
    family = model_table.text("family", None)
    factory = model_table.text("factory", None)
    if (family is None) == (factory is None):
        raise RobustdeqError(f"{manifest} [model]: give exactly one of 'family' (registered) or 'factory' (model.py)")
    if factory is not None and (":" not in factory or not factory.split(":")[0].endswith(".py")):
        raise RobustdeqError(f'{manifest} [model]: factory must look like "model.py:make_model", got {factory!r}')
    model = ModelSpec(family or "model.py", model_table.rest(), factory)
    protocols = tuple(top.texts("protocols"))

    solver = _solver_spec(top.table("solver")) if "solver" in data else None
    fidelity = _fidelity(top.table("fidelity")) if "fidelity" in data else None

    train_table = top.table("train", required=True)
    checkpoint = train_table.text("checkpoint", None)
    recipe = train_table.text("recipe", "checkpoint" if checkpoint else "standard")
    if checkpoint is None:
        from robustdeq.training import RECIPES  # imported here: training needs torch, specs do not

        try:
            RECIPES.get(recipe)  # the registry's own error names the known recipes
        except RobustdeqError as exc:
            raise RobustdeqError(f"{manifest} [train]: {exc}") from None
    has_settings = checkpoint is None and recipe in train_table.data
    recipe_settings = train_table.table(recipe).data if has_settings else {}
    train = TrainSpec(
        recipe=recipe,
        epochs=train_table.integer("epochs", TrainSpec.epochs),
        batch_size=train_table.integer("batch_size", TrainSpec.batch_size),
        lr=train_table.number("lr", TrainSpec.lr),
        weight_decay=train_table.number("weight_decay", TrainSpec.weight_decay),
        seed=train_table.integer("seed", TrainSpec.seed),
        train_subset=train_table.integer("train_subset", None),
        recipe_settings=recipe_settings,
        checkpoint=checkpoint,
    )
    train_table.done()
    if train.epochs < 0 or train.batch_size < 1 or train.lr <= 0:
        raise RobustdeqError(f"{manifest} [train]: epochs >= 0, batch_size >= 1 and lr > 0 are required")
    top.done()
    return DefenseSpec(
        id=defense,
        name=name,
        model=model,
        train=train,
        solver=solver,
        paper=paper,
        authors=tuple(authors),
        description=description,
        path=folder,
        protocols=protocols,
        suite=suite,
        torchdeq_adapter=adapter,
        fidelity=fidelity,
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
            "attacks": [{"name": a.name, **a.settings} for a in self.attacks],
            "eps_sweep": {"eps": list(self.eps_sweep), "attacks": list(self.eps_sweep_attacks)},
        }


def load_protocol(path: Path) -> ProtocolSpec:
    from robustdeq.data import DATASETS

    data, digest = read_toml(path)
    top = Table(data, str(path))
    pid = top.text("id", path.stem)
    if not ID_PATTERN.fullmatch(pid):  # it names the leaderboard folder
        raise RobustdeqError(f"{path}: protocol id {pid!r} is not a plain lowercase name (a-z, 0-9, '-', '_', '.')")
    version = top.integer("version", required=True)
    dataset = top.text("dataset", required=True)
    if dataset not in DATASETS:
        raise RobustdeqError(f"{path}: unknown data set {dataset!r} (known: {', '.join(DATASETS.names())})")
    description = top.text("description", "")
    tm = top.table("threat_model", required=True)
    threat = ThreatModel(tm.text("norm", required=True), tm.number("eps", required=True))
    tm.done()
    subset = top.table("subset", required=True)
    n_examples = subset.integer("n_examples", required=True)
    subset_seed = subset.integer("seed", None)
    subset.done()
    evaluation = top.table("evaluation")
    batch_size = evaluation.integer("batch_size", 250)
    seed = evaluation.integer("seed", 0)
    warm_start = evaluation.flag("warm_start", False)
    paper_evaluations = evaluation.flag("paper_evaluations", False)
    votes = evaluation.integer("votes", 5)
    eot_draws = evaluation.integer("eot_draws", 20)
    evaluation.done()
    if votes < 1 or votes % 2 == 0 or eot_draws < 1:
        raise RobustdeqError(f"{path} [evaluation]: votes must be odd and >= 1, eot_draws >= 1")
    attacks = []
    for t in top.tables("attacks"):
        name = t.text("name", required=True)
        modes = tuple(t.texts("grad_modes"))
        unknown = [m for m in modes if not is_attack_mode(m)]
        if unknown:
            known = ", ".join((*GRAD_MODES, "states", "state-<i>"))
            raise RobustdeqError(f"{path} attack {name}: unknown grad_modes {unknown} (known: {known})")
        attacks.append(AttackSpec(name, t.rest(), modes))
    if not attacks:
        raise RobustdeqError(f"{path}: the protocol lists no [[attacks]]")
    names = {a.name for a in attacks}
    checks_table = top.table("checks")
    checks = Checks(
        more_iterations=checks_table.text("more_iterations", None),
        solver_budget=checks_table.text("solver_budget", None),
        margin=checks_table.number("margin", 0.02),
    )
    checks_table.done()
    for key in ("more_iterations", "solver_budget"):
        target = getattr(checks, key)
        if target is not None and target not in names:
            raise RobustdeqError(f"{path} [checks] {key}: {target!r} is not one of the protocol's attacks")
    sweep = top.table("eps_sweep")
    sweep_eps = tuple(sweep.numbers("eps"))
    sweep_attacks = tuple(sweep.texts("attacks")) or ("pgd",)
    sweep.done()
    if sweep_eps and not set(sweep_attacks) <= names:
        raise RobustdeqError(
            f"{path} [eps_sweep]: attacks must be among the protocol's attacks ({', '.join(sorted(names))})"
        )
    if any(e <= 0 for e in sweep_eps) or list(sweep_eps) != sorted(sweep_eps):
        raise RobustdeqError(f"{path} [eps_sweep]: eps must be positive and increasing")
    top.done()
    if n_examples < 1 or batch_size < 1:
        raise RobustdeqError(f"{path}: n_examples and batch_size must be >= 1")
    return ProtocolSpec(
        id=pid,
        version=version,
        dataset=dataset,
        threat=threat,
        n_examples=n_examples,
        attacks=tuple(attacks),
        eps_sweep=sweep_eps,
        eps_sweep_attacks=sweep_attacks,
        subset_seed=subset_seed,
        batch_size=batch_size,
        seed=seed,
        warm_start=warm_start,
        paper_evaluations=paper_evaluations,
        votes=votes,
        eot_draws=eot_draws,
        checks=checks,
        description=description,
        hash=digest,
    )


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
