"""The straight path from a defense and a protocol to a leaderboard entry.

spec -> model (trained, or loaded from a checkpoint) -> per-example results -> entry -> tables.
The CLI commands ``bench``, ``train``, ``evaluate`` and ``submit`` are thin wrappers around
these functions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustdeq import distributed
from robustdeq.checkpoint import load_weights, read_meta, resolve_file, save_checkpoint, sha256
from robustdeq.data import DATASETS, Split, load
from robustdeq.deq import equilibria
from robustdeq.device import CPU
from robustdeq.device import describe as describe_device
from robustdeq.device import of as device_of
from robustdeq.device import resolve as resolve_device
from robustdeq.errors import RobustdeqError
from robustdeq.evaluation import EvalResult, evaluate
from robustdeq.evaluation.runner import own_loop_gradients, select_subset
from robustdeq.evaluation.view import attack_model
from robustdeq.leaderboard import read_entries, render, write_entry
from robustdeq.progress import Progress
from robustdeq.records.defense import MANIFEST, DefenseSpec, parse_defense
from robustdeq.records.entry import SCHEMA_VERSION
from robustdeq.records.paths import LEADERBOARDS_DIR
from robustdeq.records.protocol import ProtocolSpec
from robustdeq.records.store import (
    atomic_write_text,
    checkpoint_path,
    entry_path,
    read_entry,
    write_entry_and_checkpoint,
)
from robustdeq.records.threat import check_eps_within_box
from robustdeq.threat import ThreatModel, pgd
from robustdeq.training import TrainResult, build_model, train_model
from robustdeq.version import __version__
from robustdeq.zoo import write_index


@dataclass(frozen=True)
class Budget:
    """Departures from the manifest and the protocol: a smaller training budget or test subset
    (entries flagged ``reduced_budget``), and options that change the attacks' random draws or the
    coverage, an attack batch size or an eps sweep replacing the protocol's (entries flagged
    ``nonstandard_run``; both are recorded in the entry)."""

    epochs: int | None = None
    train_subset: int | None = None
    n_examples: int | None = None
    batch_size: int | None = None
    eps_sweep: tuple[float, ...] | None = None

    def reduced(self, defense: DefenseSpec, protocol: ProtocolSpec, training: dict[str, Any] | None = None) -> bool:
        """Smaller than the manifest says (this run's budget, or the ``training`` record of a
        checkpoint trained with one) or than the protocol's test subset."""
        defense = defense.on(protocol.dataset)
        trained_less = (
            training is not None
            and training.get("recipe") != "checkpoint"
            and (training["epochs"] < defense.train.epochs or training["train_subset"] is not None)
        )
        return (
            (self.epochs is not None and self.epochs < defense.train.epochs)
            or (self.train_subset is not None)
            or (self.n_examples is not None and self.n_examples < protocol.n_examples)
            or trained_less
        )

    def nonstandard(self, protocol: ProtocolSpec) -> dict[str, Any] | None:
        """The options that made this run differ from the protocol's draws or coverage, or None."""
        out: dict[str, Any] = {}
        if self.batch_size is not None and self.batch_size != protocol.batch_size:
            out["batch_size"] = self.batch_size
        if self.eps_sweep is not None and tuple(self.eps_sweep) != tuple(protocol.eps_sweep):
            out["eps_sweep"] = list(self.eps_sweep)
        return out or None

    def departures(
        self, defense: DefenseSpec, protocol: ProtocolSpec, training: dict[str, Any] | None = None
    ) -> list[str]:
        """What makes this run's entry differ from a full, standard one, in a user's words."""
        defense = defense.on(protocol.dataset)
        out = []
        if self.epochs is not None and self.epochs < defense.train.epochs:
            out.append(f"--epochs {self.epochs} (the manifest says {defense.train.epochs})")
        if self.train_subset is not None:
            out.append(f"--train-subset {self.train_subset}")
        if self.n_examples is not None and self.n_examples < protocol.n_examples:
            out.append(f"--n-examples {self.n_examples} (the protocol says {protocol.n_examples})")
        if self.reduced(defense, protocol, training) and not out:
            out.append("a checkpoint trained with a reduced budget")
        out.extend(f"--{key.replace('_', '-')}" for key in self.nonstandard(protocol) or {})
        return out


def refuse_replacing(
    out: Path,
    defense: DefenseSpec,
    protocol: ProtocolSpec,
    budget: Budget,
    training: dict[str, Any] | None = None,
    force: bool = False,
) -> None:
    """A run with a reduced budget, a test subset or non-standard attack options never replaces a
    full, standard entry unless ``force``: raises before anything is trained or written."""
    path = entry_path(out, protocol.id, defense.id)
    departures = budget.departures(defense, protocol, training)
    if force or not departures or not path.is_file():
        return
    existing = read_entry(path)
    provenance = existing["provenance"]
    if provenance["reduced_budget"] or provenance.get("nonstandard"):
        return  # replacing one reduced or non-standard entry with another loses nothing a full run made
    raise RobustdeqError(
        f"{path} is a full entry and this run is not ({', '.join(departures)}); "
        "pass --force to replace it, or --out another folder"
    )


@dataclass
class TrainedModel:
    model: nn.Module
    train_info: dict[str, Any] | None  # the training record; None for a model robustdeq did not train
    train_seconds: float
    dataset: str = ""
    protocol: str = ""  # the protocol it was trained for
    federated: dict[str, Any] | None = None  # the federated recipe's per-round record
    checkpoint: Path | None = None  # the checkpoint file it was saved to or loaded from
    notes: list[str] = field(default_factory=list)  # what a user should know about how it was loaded


@dataclass(frozen=True)
class RoundMonitor:
    """Clean and PGD-20 accuracy (the model's own attack-time gradient, warm-started, random
    start seeded by the protocol) on the protocol's test subset: the federated recipe's
    per-round curve. Not the protocol's worst case, which the final model gets."""

    x: Tensor
    y: Tensor
    threat: ThreatModel
    seed: int
    steps: int = 20

    @property
    def description(self) -> str:
        return (
            f"clean and PGD-{self.steps} accuracy (step 2.5 eps / steps, random start) on the first "
            f"{len(self.y)} protocol examples"
        )

    def __call__(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            clean = model(self.x).argmax(1) == self.y
        generator = torch.Generator(CPU).manual_seed(self.seed)
        attacked = attack_model(model, self.x, self.threat)
        step = 2.5 * self.threat.eps / self.steps
        x_adv = pgd(attacked, self.x, self.y, self.threat, self.steps, step, True, generator)
        with torch.no_grad():
            robust = clean & (model(x_adv).argmax(1) == self.y)
        return {"clean_accuracy": float(clean.float().mean()), "pgd_accuracy": float(robust.float().mean())}


# The per-round curve costs a PGD-20 per round; on the large protocols it looks at a slice.
MONITOR_EXAMPLES = 1000


def round_monitor(protocol: ProtocolSpec, test: Split, budget: Budget, device: torch.device) -> RoundMonitor:
    idx = select_subset(protocol, test, budget.n_examples)[:MONITOR_EXAMPLES]
    return RoundMonitor(test.x[idx].to(device), test.y[idx].to(device), protocol.threat, protocol.seed)


def load_splits(protocol: ProtocolSpec, data_dir: Path | None, download: bool) -> tuple[Split, Split]:
    """The data set's train and test splits, after checking that the protocol's eps (and its sweep's) fit
    the data set's box: an error before any download, training or attack."""
    numel = math.prod(DATASETS.get(protocol.dataset).shape)
    eps = [protocol.threat.eps, *protocol.eps_sweep]
    check_eps_within_box(protocol.threat.norm, eps, numel, f"protocol {protocol.id}")
    return load(protocol.dataset, "train", data_dir, download), load(protocol.dataset, "test", data_dir, download)


def train_defense(
    defense: DefenseSpec,
    protocol: ProtocolSpec,
    train: Split,
    budget: Budget = Budget(),
    progress: Progress | None = None,
    test: Split | None = None,
    device: str | torch.device | None = None,
    resume: Path | None = None,
) -> tuple[TrainResult, dict[str, Any]]:
    """Train ``defense`` for ``protocol``'s data set on ``device`` (default: auto); returns the result
    and the training record.

    With ``test``, a federated recipe measures the fused model on the protocol's subset after
    every round. ``resume``: where training saves its progress after every epoch, and resumes
    from (:mod:`robustdeq.training.resume`)."""
    defense = defense.on(protocol.dataset)
    target = resolve_device(device)
    spec = defense.train
    if spec.checkpoint is not None:  # a submission that ships trained weights: nothing is trained
        model = load_weights(
            build_model(defense, protocol.dataset, target), (defense.path or Path(".")) / spec.checkpoint
        )
        return TrainResult(model, 0.0, {"checkpoint": spec.checkpoint}, float("nan"), 0, 0), spec.to_dict()
    if budget.epochs is not None:
        spec = dataclasses.replace(spec, epochs=budget.epochs)
    if budget.train_subset is not None:
        spec = dataclasses.replace(spec, train_subset=budget.train_subset)
    monitor = round_monitor(protocol, test, budget, target) if test is not None else None
    result = train_model(defense, protocol.dataset, train, protocol.threat, spec, progress, monitor, target, resume)
    record = spec.to_dict()
    record["recipe_settings"] = result.recipe_settings
    return result, record


def checkpoint_meta(
    defense: DefenseSpec,
    protocol: ProtocolSpec,
    record: dict[str, Any],
    seconds: float,
    federated: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a checkpoint carries besides its weights (:mod:`robustdeq.checkpoint`)."""
    return {
        "defense": defense.id,
        "defense_path": str(defense.path.resolve()) if defense.path else None,
        "manifest": defense.manifest,
        # the name and settings the model was built with: a sweep point's differ from the manifest's
        "name": defense.name,
        "model_settings": dict(defense.on(protocol.dataset).model.settings),
        "files": dict(defense.files),
        "protocol": protocol.id,
        "dataset": protocol.dataset,
        "training": record,
        "train_seconds": seconds,
        "federated": federated,
        "robustdeq_version": __version__,
        "git_commit": git_commit(),
        "command": command_line(),
    }


def defense_from_meta(meta: dict[str, Any], where: Path) -> tuple[DefenseSpec, list[str]]:
    """The defense a checkpoint carries (its manifest, and its model.py for a submitted model),
    and a note when the defense folder it came from has another manifest now."""
    try:
        data = tomllib.loads(meta["manifest"])
    except (tomllib.TOMLDecodeError, TypeError) as exc:
        raise RobustdeqError(f"{where}: the manifest it carries is not valid TOML: {exc}") from None
    files = meta.get("files") or {}
    folder = None
    if files:  # a submitted model.py: materialised where the factory can import it
        folder = Path(tempfile.mkdtemp(prefix=f"robustdeq-{meta['defense']}-"))
        for name, text in files.items():
            (folder / Path(name).name).write_text(text, encoding="utf-8")
    spec = parse_defense(data, meta["defense"], folder, f"{where} (the manifest it carries)")
    spec = dataclasses.replace(spec, manifest=meta["manifest"], files=tuple(files.items()))
    notes = []
    original = Path(meta["defense_path"]) / MANIFEST if meta.get("defense_path") else None
    if original is not None and original.is_file() and original.read_text(encoding="utf-8") != meta["manifest"]:
        if _trains_otherwise(original, spec, meta["dataset"]):
            notes.append(
                f"{original} has changed since this checkpoint was trained; evaluating with the manifest it carries"
            )
    return spec, notes


def _trains_otherwise(manifest: Path, carried: DefenseSpec, dataset: str) -> bool:
    """Whether the defense folder's manifest now builds or trains ``dataset``'s model otherwise than the
    manifest a checkpoint carries (a changed description, deviation or other data set's table does not)."""
    try:
        now = parse_defense(tomllib.loads(manifest.read_text(encoding="utf-8")), carried.id, None, str(manifest))
    except (RobustdeqError, tomllib.TOMLDecodeError):
        return True
    a, b = now.on(dataset), carried.on(dataset)
    return (a.model, a.solver, a.train, a.torchdeq_adapter) != (b.model, b.solver, b.train, b.torchdeq_adapter)


def load_trained(
    path: Path | str, device: str | torch.device | None = None, protocol: str | None = None
) -> tuple[DefenseSpec, TrainedModel]:
    """A saved model: a `robustdeq train` folder, a checkpoint file, or ``zoo:NAME`` /
    ``zoo:PROTOCOL/NAME`` (a reference model of the zoo, :mod:`robustdeq.zoo`; a NAME under several
    protocols is the one under ``protocol``); its defense spec (from the manifest the checkpoint
    carries) and the trained model, on ``device``."""
    from robustdeq import zoo

    text = str(path)
    file = (
        zoo.fetch(zoo.find_model(text[len("zoo:") :], prefer=protocol))
        if text.startswith("zoo:")
        else resolve_file(Path(path))
    )
    meta = read_meta(file)
    defense, notes = defense_from_meta(meta, file)
    defense = defense.on(meta["dataset"])
    if meta.get("model_settings") is not None:  # absent from checkpoints written before it was recorded
        settings = meta["model_settings"]
        defense = dataclasses.replace(defense, model=dataclasses.replace(defense.model, settings=settings))
    if meta.get("name"):
        defense = dataclasses.replace(defense, name=meta["name"])
    model = build_model(defense, meta["dataset"], device)
    load_weights(model, file)
    trained = TrainedModel(
        model,
        meta["training"],
        float(meta.get("train_seconds") or 0.0),
        meta["dataset"],
        meta["protocol"],
        meta.get("federated"),
        file,
        notes,
    )
    return defense, trained


def rebuilder(defense: DefenseSpec, trained: TrainedModel) -> Callable[[], nn.Module] | None:
    """Fresh instances of a trained model rebuilt from its checkpoint (the manifest it was trained
    from, a fresh import of a submitted model.py, the saved weights): what verification classifies
    on. None when there is no checkpoint file to rebuild from (the runner then copies the model)."""
    file = trained.checkpoint
    if file is None or not file.is_file():
        return None
    dataset, device = trained.dataset or read_meta(file)["dataset"], device_of(trained.model)

    def fresh() -> nn.Module:
        return load_weights(build_model(defense, dataset, device), file)

    return fresh


def command_line() -> str:
    """The command this process runs, as a user would type it (for an entry's provenance)."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("robustdeq", "__main__.py") or program.startswith("robustdeq"):
        program = "robustdeq"
    return " ".join([program, *sys.argv[1:]])


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def hardware() -> str:
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    world = distributed.world_size()
    processes = f"{world} processes x " if world > 1 else ""  # torchrun
    return f"{platform.machine()}, {processes}{torch.get_num_threads()} torch threads, {cuda}"


def make_entry(
    defense: DefenseSpec,
    protocol: ProtocolSpec,
    trained: TrainedModel,
    result: EvalResult,
    budget: Budget,
    checkpoint: dict[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """The leaderboard entry (see :class:`robustdeq.records.entry.EntryRecord`) for one evaluation of ``trained``;
    ``checkpoint`` is the entry's checkpoint record (file, url, sha256), ``command`` what ran it
    (default: this process's command line)."""
    defense = defense.on(protocol.dataset)
    model = trained.model
    flags = list(result.flags)
    layers = equilibria(model)
    modes = sorted({layer.spec.attack_grad for layer in layers})
    exact = any(s.get("grad") in ("ift", "unroll") for s in result.attack_settings.values())
    if "phantom" in modes and not exact:  # no attack of the protocol ran with an exact gradient
        flags.append("approximate_attack_gradient")
    if own_loop_gradients(model):  # robustdeq's own inference-time loop, attacked by robustdeq's own gradients
        flags.append("test_time_optimisation")
    reduced = budget.reduced(defense, protocol, trained.train_info)
    if reduced:
        flags.append("reduced_budget")
    nonstandard = budget.nonstandard(protocol)
    if nonstandard is not None:
        flags.append("nonstandard_run")
    solver = None
    if layers and result.solver is not None:
        solver = {
            "settings": layers[0].spec.to_dict(),
            "attack_grad_modes": modes,
            **dataclasses.asdict(result.solver),
        }
    entry: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "defense": defense.id,
        "defense_name": defense.name,
        "paper": defense.paper,
        "model_family": defense.model.family,
        "model_settings": dict(defense.model.settings),
        "protocol": protocol.id,
        "protocol_version": protocol.version,
        "protocol_hash": protocol.hash,
        "dataset": protocol.dataset,
        "threat_model": {"norm": protocol.threat.norm, "eps": protocol.threat.eps},
        "n_examples": len(result.indices),
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "attacks": result.attack_accuracies(),
        "flags": flags,
        "checks": dict(result.checks),
        "eps_sweep": {
            "attacks": list(protocol.eps_sweep_attacks),
            "points": [{"eps": eps, "robust_accuracy": acc} for eps, acc in result.eps_sweep],
        }
        if result.eps_sweep
        else None,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "forward_cost": result.forward_cost,
        "solver": solver,
        "per_example": result.outcomes(),
        "fidelity": defense.fidelity.to_dict() if defense.fidelity is not None else None,
        "paper_evaluation": [
            {
                "label": label.removeprefix("paper:"),
                "description": defense.fidelity.describe(label) if defense.fidelity is not None else "",
                "accuracy": accuracy,
                "settings": settings,
            }
            for label, (accuracy, settings) in result.paper_evaluation.items()
        ],
        "provenance": {
            "robustdeq_version": __version__,
            "torch_version": torch.__version__,
            "python_version": sys.version.split()[0],
            "git_commit": git_commit(),
            "command": command or command_line(),
            "checkpoint": checkpoint,
            "hardware": hardware(),
            "device": describe_device(device_of(model)),
            "seed": protocol.seed,
            "training": trained.train_info,
            "attack_settings": result.attack_settings,
            "reduced_budget": reduced,
            "nonstandard": nonstandard,
            "train_seconds": round(trained.train_seconds, 3),
            "eval_seconds": round(result.seconds, 3),
            "attack_seconds": dict(result.attack_seconds),
        },
    }
    if trained.federated is not None:
        entry["federated"] = trained.federated
    return entry


def state_file(out: Path, protocol: str, defense: str) -> Path:
    """Where an evaluation keeps its attack progress (under torchrun, this rank's file)."""
    suffix = f".rank{distributed.rank()}" if distributed.world_size() > 1 else ""
    return out / protocol / f".{defense}.state{suffix}.json"


def training_state_file(out: Path, protocol: str, defense: str) -> Path:
    """Where training keeps its progress, saved after every epoch, until the entry is written."""
    return out / protocol / f".{defense}.train-state.safetensors"


def trained_file(out: Path, protocol: str, defense: str) -> Path:
    """Where a freshly trained model waits, hidden beside its entry, until entry and checkpoint are
    written as a pair (:func:`robustdeq.records.store.write_entry_and_checkpoint`)."""
    return out / protocol / f".{defense}.trained.safetensors"


def evaluate_and_write(
    defense: DefenseSpec,
    protocol: ProtocolSpec,
    trained: TrainedModel,
    test: Split,
    out: Path,
    budget: Budget = Budget(),
    progress: Progress | None = None,
    per_example: Path | None = None,
) -> dict[str, Any]:
    """Evaluate a trained model, write its entry under ``out`` and re-render the tables.

    Attack progress is saved beside the entry (``.<defense>.state.json``, under torchrun one
    ``.<defense>.state.rank<r>.json`` per rank) after every batch, so a killed run started again
    resumes; the state file goes once the entry is written. ``per_example``: also write the
    per-example outcomes (:meth:`EvalResult.per_example`) to that JSON file. Under torchrun only
    rank 0 writes the entry, the tables and the per-example file; every rank returns the entry.
    """
    defense = defense.on(protocol.dataset)
    suffix = f".rank{distributed.rank()}" if distributed.world_size() > 1 else ""
    state_path = state_file(out, protocol.id, defense.id)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    if budget.eps_sweep is not None:
        protocol = dataclasses.replace(protocol, eps_sweep=budget.eps_sweep)
    paper = defense.fidelity.paper_attacks() if defense.fidelity is not None else ()
    fresh = rebuilder(defense, trained)
    args = (budget.n_examples, progress, state_path, budget.batch_size, paper, fresh)
    result = evaluate(trained.model, protocol, test, *args)
    checkpoint = None
    if distributed.is_main() and trained.checkpoint is not None:
        # The entry's checkpoint lies beside it, written with it as a pair (a copy of the model's file).
        beside = checkpoint_path(out, protocol.id, defense.id)
        checkpoint = {"file": beside.name, "url": None, "sha256": sha256(trained.checkpoint)}
    entry = make_entry(defense, protocol, trained, result, budget, checkpoint)
    if distributed.is_main():
        if trained.checkpoint is not None:
            write_entry_and_checkpoint(out, entry, trained.checkpoint)
        else:
            write_entry(out, entry)
        if per_example is not None:
            atomic_write_text(per_example, json.dumps(result.per_example()) + "\n")
    state_path.unlink(missing_ok=True)
    if result.resumed_batches and progress is not None:
        name = f".{defense.id}.state{'.rank<r>' if suffix else ''}.json"
        progress.console.print(f"resumed {result.resumed_batches} attack batches from {name}")
    if distributed.is_main():
        folder = out / protocol.id
        render(read_entries(folder), folder)
        write_index(out)
    return entry


def run_defense(
    defense: DefenseSpec,
    protocol: ProtocolSpec,
    splits: tuple[Split, Split],
    out: Path,
    budget: Budget = Budget(),
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    train_only: bool = False,
) -> dict[str, Any]:
    """Train ``defense`` on ``device``, evaluate it and write its entry and checkpoint
    (``<out>/<protocol>/<defense>.json`` and ``.safetensors``) as a pair.

    ``train_only``: stop after training, keeping the finished training state, so the next run
    (without it) evaluates the model without training it again; returns ``{"defense", "train_seconds"}``.

    Until then the new model waits in :func:`trained_file`, and an entry already there keeps the
    checkpoint it names: a run killed at any point leaves the zoo loadable. Started again, a killed
    run resumes training after its last finished epoch (:func:`training_state_file`) and the attacks
    after their last batch (:func:`state_file`)."""
    train, test = splits
    resume = training_state_file(out, protocol.id, defense.id)
    result, record = train_defense(defense, protocol, train, budget, progress, test, device, resume)
    if train_only:
        return {"defense": defense.id, "train_seconds": result.seconds}
    checkpoint = trained_file(out, protocol.id, defense.id)
    if distributed.is_main():
        save_checkpoint(
            result.model, checkpoint, checkpoint_meta(defense, protocol, record, result.seconds, result.federated)
        )
    distributed.barrier()  # every rank verifies on instances rebuilt from this file
    trained = TrainedModel(
        result.model, record, result.seconds, protocol.dataset, protocol.id, result.federated, checkpoint
    )
    entry = evaluate_and_write(defense, protocol, trained, test, out, budget, progress)
    if distributed.is_main():
        checkpoint.unlink(missing_ok=True)  # copied beside the entry
        resume.unlink(missing_ok=True)
    return entry


def run_defenses(
    defenses: list[DefenseSpec],
    protocol: ProtocolSpec,
    data_dir: Path | None,
    download: bool,
    out: Path,
    budget: Budget = Budget(),
    progress: Progress | None = None,
    jobs: int = 1,
    device: str | torch.device | None = None,
    force: bool = False,
    train_only: bool = False,
) -> list[dict[str, Any]]:
    """Run :func:`run_defense` for each defense, in ``jobs`` worker processes when ``jobs > 1``.

    Every defense runs with one torch thread, whatever ``jobs`` is, so the numbers do not depend
    on it (thread count changes floating-point reduction order). The models here are small and
    their cost is mostly per-operation overhead, so two single-threaded processes on two cores
    finish well before one two-threaded process. Returns the entries in ``defenses`` order.

    Under torchrun the ranks cooperate on each defense in turn (data-parallel training, sharded
    attacks), so ``jobs`` must be 1 there.

    A run with a reduced budget that would replace a full entry is refused before any training
    (:func:`refuse_replacing`) unless ``force``. ``train_only``: see :func:`run_defense`.
    """
    for defense in defenses:
        refuse_replacing(out, defense, protocol, budget, force=force)
    progress = progress or Progress.quiet()
    target = resolve_device(device)
    if jobs > 1 and distributed.world_size() > 1:
        raise RobustdeqError(f"--jobs {jobs} under torchrun: the ranks share each defense; use --jobs 1")
    if jobs <= 1 or len(defenses) <= 1:
        splits = load_splits(protocol, data_dir, download)
        entries = []
        with _threads(1):
            for defense in defenses:
                progress.console.print(f"[bold]{defense.id}[/bold] ({defense.name}) under {protocol.id}")
                entries.append(run_defense(defense, protocol, splits, out, budget, progress, target, train_only))
        return entries
    load_splits(protocol, data_dir, download)  # a missing data set fails here, before any worker starts
    order = sorted(range(len(defenses)), key=lambda i: -_expected_seconds(defenses[i], out / protocol.id))
    results: dict[int, dict[str, Any]] = {}
    context = multiprocessing.get_context("spawn")
    started = context.SimpleQueue()  # each worker says which defense it starts (handed over at spawn)
    # Ctrl-C reaches every process of the terminal's group: the workers ignore it (no traceback from
    # each), and the parent, on KeyboardInterrupt, cancels what is queued and terminates them.
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init, initargs=(started,))
    try:
        with _interrupts_ignored():  # also while the workers start, before their initializer runs
            futures = {
                pool.submit(_run_in_worker, defenses[i], protocol, data_dir, out, budget, str(target), train_only): i
                for i in order
            }
        pending = set(futures)
        begun: dict[str, float] = {}
        with progress.task(f"{protocol.id}: defenses done", len(defenses)) as advance:
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                while not started.empty():
                    name = started.get()
                    begun[name] = time.monotonic()
                    progress.console.print(f"[bold]{name}[/bold] under {protocol.id}: started", soft_wrap=True)
                for future in done:
                    i = futures[future]
                    results[i] = e = future.result()
                    took = time.monotonic() - begun.get(defenses[i].id, time.monotonic())
                    numbers = (
                        "trained"
                        if train_only
                        else f"clean {100 * e['clean_accuracy']:.1f}%, robust {100 * e['robust_accuracy']:.1f}%"
                    )
                    progress.console.print(
                        f"[bold]{defenses[i].id}[/bold] under {protocol.id}: done in {_minutes(took)}, {numbers} "
                        f"({len(results)}/{len(defenses)} done)",
                        soft_wrap=True,  # one line each, whatever the terminal's width (logs are grepped)
                    )
                    advance(1)
    except KeyboardInterrupt:
        workers = multiprocessing.active_children()
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error, no queued defense starts
        started.close()
    folder = out / protocol.id
    render(read_entries(folder), folder)  # once more, after every worker has written its entry
    write_index(out)
    return [results[i] for i in range(len(defenses))]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s" if seconds >= 60 else f"{seconds:.0f} s"


def _expected_seconds(defense: DefenseSpec, folder: Path) -> float:
    """How long a defense is expected to take, to start the longest first (the suite's wall time is
    then close to its total work over ``jobs``): the time its previous entry in ``folder`` records,
    else the time its committed entry in the repository's leaderboards records (a fresh ``--out``
    still starts LyaDEQ first), else a guess from its kind (adversarially trained implicit models
    take longest). Only the order depends on this, never a number."""
    for path in (folder / f"{defense.id}.json", LEADERBOARDS_DIR / folder.name / f"{defense.id}.json"):
        try:
            provenance = json.loads(path.read_text())["provenance"]
            return float(provenance["train_seconds"] or 0) + float(provenance["eval_seconds"] or 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    implicit = defense.model.family in ("deq", "lyadeq")
    return 100.0 * implicit + 50.0 * (defense.train.recipe != "standard")


def _run_in_worker(
    defense: DefenseSpec,
    protocol: ProtocolSpec,
    data_dir: Path | None,
    out: Path,
    budget: Budget,
    device: str,
    train_only: bool = False,
) -> dict[str, Any]:
    torch.set_num_threads(1)
    if _STARTED is not None:
        _STARTED.put(defense.id)
    splits = load_splits(protocol, data_dir, False)
    return run_defense(defense, protocol, splits, out, budget, Progress.quiet(), device, train_only)


_STARTED: Any = None  # in a worker process: the queue on which it announces each defense it starts


def _worker_init(started: Any) -> None:
    global _STARTED
    _STARTED = started
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """SIGINT ignored while worker processes start, so they inherit that from their first instruction
    (Python keeps an inherited SIG_IGN); only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
