"""The training loop shared by every recipe and model family."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustdeq.data import DATASETS, Split
from robustdeq.deq import equilibria
from robustdeq.deq.torchdeq_adapter import from_torchdeq
from robustdeq.device import resolve as resolve_device
from robustdeq.errors import RobustdeqError
from robustdeq.models import create_model
from robustdeq.models.entropy import EntropyReduced
from robustdeq.models.entropy import wrap as entropy_wrap
from robustdeq.progress import Progress
from robustdeq.records.defense import DefenseSpec, TrainSpec
from robustdeq.threat import ThreatModel
from robustdeq.training.base import Recipe, make_recipe
from robustdeq.training.federated import Federated, Monitor, train_federated
from robustdeq.training.loop import run_epochs
from robustdeq.training.resume import TrainingState, run_context, training_key
from robustdeq.validate import check_trainable


@dataclass
class TrainResult:
    model: nn.Module
    seconds: float
    recipe_settings: dict[str, Any]
    final_loss: float
    forward_evals: int
    backward_evals: int
    federated: dict[str, Any] | None = None  # per-round record of a federated recipe


def build_model(defense: DefenseSpec, dataset: str, device: str | torch.device | None = None) -> nn.Module:
    """The defense's model for ``dataset`` (a registered family, or the factory in its model.py), built
    on the CPU (its random initialisation does not depend on the device) and moved to ``device``."""
    info = DATASETS.get(dataset)
    for name in defense.datasets:  # a [datasets.<name>] table must name a data set that exists
        DATASETS.get(name)
    defense = defense.on(dataset)
    target = resolve_device(device)
    if defense.model.factory is not None:
        model = _from_factory(defense, info.shape, info.num_classes)
        # torchdeq DEQ modules give no input gradient in eval mode: adapted unless the manifest says not.
        return (from_torchdeq(model) if defense.torchdeq_adapter else model).to(target)
    settings = dict(defense.model.settings)
    loop = settings.pop("entropy_reduction", None)
    model = create_model(defense.model.family, info.shape, info.num_classes, defense.solver, **settings)
    if loop is not None:  # an inference-time loop around the trained model
        model = entropy_wrap(model, loop, str(defense.path or defense.id))
    return model.to(target)


def _from_factory(defense: DefenseSpec, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    import importlib.util
    import inspect

    assert defense.model.factory is not None
    filename, function = defense.model.factory.split(":", 1)
    path = (defense.path or Path(".")) / filename
    if not path.is_file():
        raise RobustdeqError(f"{path}: model file not found")
    module_spec = importlib.util.spec_from_file_location(f"robustdeq_submission_{defense.id.replace('-', '_')}", path)
    if module_spec is None or module_spec.loader is None:
        raise RobustdeqError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the submitted file may raise anything, or call sys.exit
        raise RobustdeqError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise RobustdeqError(f"{path}: no function {function!r}")
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in defense.model.settings if k not in params or k in ("in_shape", "num_classes")]
        if unknown:
            known = ", ".join(k for k in params if k not in ("in_shape", "num_classes")) or "none"
            raise RobustdeqError(
                f"{path}: {function}() takes no argument {', '.join(map(repr, unknown))} from [model] "
                f"(its parameters: {known})"
            )
    try:
        model = factory(in_shape=in_shape, num_classes=num_classes, **defense.model.settings)
    except (Exception, SystemExit) as exc:
        raise RobustdeqError(f"{path}: {function}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise RobustdeqError(f"{path}: {function}() must return a torch.nn.Module, got {type(model).__name__}")
    return model


def training_recipe(train: TrainSpec, threat: ThreatModel, where: str) -> Recipe:
    """The recipe ``train`` names, with its settings (``where``: the manifest, for errors).

    The recipe's name is checked first, then sub-tables of ``[train]`` it does not own are refused.
    """
    recipe = make_recipe(train.recipe, train.recipe_settings, threat, f"{where} [train.{train.recipe}]")
    if train.stray_tables:
        raise RobustdeqError(f"{where} [train]: unknown field {train.stray_tables[0]!r}")
    return recipe


def train_model(
    defense: DefenseSpec,
    dataset: str,
    data: Split,
    threat: ThreatModel,
    train: TrainSpec | None = None,
    progress: Progress | None = None,
    monitor: Monitor | None = None,
    device: str | torch.device | None = None,
    resume: Path | None = None,
) -> TrainResult:
    """Train a fresh model of ``defense`` on ``data``; the seed fixes init, shuffling and attacks.

    ``train`` overrides the manifest's training spec (e.g. a smaller budget). ``monitor`` is
    called on the model after each federated round (its numbers go into the entry). The model
    and the data go to ``device`` (default: auto); every random draw of training is made on the CPU.
    ``resume``: a file the progress is saved to after every epoch, and resumed from when it holds
    this training's (:mod:`robustdeq.training.resume`; a federated recipe starts over).

    Under torchrun every recipe trains data-parallel: see
    :func:`robustdeq.training.loop.run_epochs` and README, "Running on a cluster"; the weights
    equal a single process's up to floating-point reduction order.
    """
    defense = defense.on(dataset)
    spec = train or defense.train
    target = resolve_device(device)
    if spec.checkpoint is not None:
        raise RobustdeqError(
            f"{defense.id}: ships trained weights ({spec.checkpoint}); load them, there is nothing to train"
        )
    recipe = training_recipe(spec, threat, str(defense.path or defense.id))
    torch.manual_seed(spec.seed)
    model = build_model(defense, dataset, target)
    if defense.model.factory is not None and spec.epochs > 0:  # a submitted model.py; the families train
        check_trainable(model, dataset)
    x, y = data.x.to(target), data.y.to(target)
    if spec.train_subset is not None:
        x, y = x[: spec.train_subset], y[: spec.train_subset]
    progress = progress or Progress.quiet()
    start = time.perf_counter()
    state = None
    if resume is not None:
        state = TrainingState(resume, training_key(defense, dataset, spec, threat, target), run_context(target))
        foreign = state.foreign()
        if foreign is not None:
            progress.console.print(f"note: {foreign}", highlight=False, soft_wrap=True)
    federated = None
    # An inference-time loop is not part of training: the recipe trains the model inside it.
    trainee = model.base if isinstance(model, EntropyReduced) else model
    if isinstance(recipe, Federated):
        final_loss, federated = train_federated(trainee, recipe, x, y, spec, progress, defense.id, monitor)
    else:
        n_batches = (len(y) + spec.batch_size - 1) // spec.batch_size
        with progress.task(f"train {defense.id}", total=spec.epochs * n_batches) as advance:
            final_loss = run_epochs(trainee, recipe, x, y, spec, spec.epochs, spec.seed, advance, state)
        if state is not None and state.resumed:
            progress.console.print(f"resumed training of {defense.id} after epoch {state.resumed} of {spec.epochs}")
    model.eval()
    layers = equilibria(model)
    return TrainResult(
        model=model,
        seconds=state.seconds if state is not None else time.perf_counter() - start,
        recipe_settings=recipe.settings(),
        final_loss=final_loss,
        forward_evals=sum(layer.counters.forward_evals for layer in layers),
        backward_evals=sum(layer.counters.backward_evals for layer in layers),
        federated=federated,
    )
