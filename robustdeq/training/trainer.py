"""The training loop shared by every recipe and model family."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustdeq import distributed
from robustdeq.config import Table
from robustdeq.data import DATASETS, Split
from robustdeq.deq import equilibria, regularisation
from robustdeq.errors import RobustdeqError
from robustdeq.models import create_model
from robustdeq.progress import Progress
from robustdeq.specs import DefenseSpec, TrainSpec
from robustdeq.threat import ThreatModel
from robustdeq.training.recipes import RECIPES, BatchNoise


@dataclass
class TrainResult:
    model: nn.Module
    seconds: float
    recipe_settings: dict[str, Any]
    final_loss: float
    forward_evals: int
    backward_evals: int


def build_model(defense: DefenseSpec, dataset: str) -> nn.Module:
    """The defense's model for ``dataset``: a registered family, or the factory in its model.py."""
    info = DATASETS.get(dataset)
    if defense.model.factory is None:
        return create_model(
            defense.model.family, info.shape, info.num_classes, defense.solver, **defense.model.settings
        )
    return _from_factory(defense, info.shape, info.num_classes)


def _from_factory(defense: DefenseSpec, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    import importlib.util

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
    except Exception as exc:  # the submitted file may raise anything
        raise RobustdeqError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise RobustdeqError(f"{path}: no function {function!r}")
    try:
        model = factory(in_shape=in_shape, num_classes=num_classes, **defense.model.settings)
    except Exception as exc:
        raise RobustdeqError(f"{path}: {function}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise RobustdeqError(f"{path}: {function}() must return a torch.nn.Module, got {type(model).__name__}")
    return model


def _load_checkpoint(defense: DefenseSpec, dataset: str, checkpoint: str) -> TrainResult:
    """A submission that ships trained weights: build the model and load them; nothing is trained."""
    from robustdeq.checkpoint import load_weights

    model = build_model(defense, dataset)
    load_weights(model, (defense.path or Path(".")) / checkpoint)
    return TrainResult(model, 0.0, {"checkpoint": checkpoint}, float("nan"), 0, 0)


def make_recipe(train: TrainSpec, threat: ThreatModel, where: str) -> Any:
    factory = RECIPES.get(train.recipe)
    return factory(Table(train.recipe_settings, f"{where} [train.{train.recipe}]"), threat)


def train_model(
    defense: DefenseSpec,
    dataset: str,
    data: Split,
    threat: ThreatModel,
    train: TrainSpec | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a fresh model of ``defense`` on ``data``; the seed fixes init, shuffling and attacks.

    ``train`` overrides the manifest's training spec (e.g. a smaller budget).

    Under torchrun the model is wrapped in DistributedDataParallel and every process takes its
    contiguous share of each global batch (:func:`robustdeq.distributed.rows`): the batches, their
    order and the global batch size are those of a single process. Each process's mean loss is
    weighted by its share of the batch, so DDP's average of the gradients is the gradient of the
    batch's mean loss even when the shares differ (a last batch not divisible by the number of
    processes); a process with no rows runs one row at weight zero. Recipes draw their noise for
    the whole batch (:class:`~robustdeq.training.recipes.BatchNoise`), so each example gets the
    numbers a single process would give it. The weights then equal a single process's up to
    floating-point reduction order (see README, "Running on a cluster").
    """
    spec = train or defense.train
    if spec.checkpoint is not None:
        return _load_checkpoint(defense, dataset, spec.checkpoint)
    recipe = make_recipe(spec, threat, str(defense.path or defense.id))
    torch.manual_seed(spec.seed)
    model = build_model(defense, dataset)
    x, y = data.x, data.y
    if spec.train_subset is not None:
        x, y = x[: spec.train_subset], y[: spec.train_subset]
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    shuffle = torch.Generator().manual_seed(spec.seed)
    attack_rng = torch.Generator().manual_seed(spec.seed + 1)
    n_batches = (len(y) + spec.batch_size - 1) // spec.batch_size
    progress = progress or Progress.quiet()
    start = time.perf_counter()
    final_loss = float("nan")
    world = distributed.world_size()
    net = model if world == 1 else distributed.data_parallel(model)
    model.train()
    with progress.task(f"train {defense.id}", total=spec.epochs * n_batches) as advance:
        for _ in range(spec.epochs):
            order = torch.randperm(len(y), generator=shuffle)
            for b in range(n_batches):
                idx = order[b * spec.batch_size : (b + 1) * spec.batch_size]
                rows = distributed.rows(len(idx))
                share = (rows.stop - rows.start) / len(idx)
                if share == 0:
                    rows = slice(0, 1)
                mine = idx[rows]
                loss = recipe.loss(net, x[mine], y[mine], BatchNoise(attack_rng, len(idx), rows))
                penalty = regularisation(model)
                if penalty is not None:
                    loss = loss + penalty
                optimizer.zero_grad(set_to_none=True)
                (loss if world == 1 else loss * (world * share)).backward()
                optimizer.step()
                final_loss = float(loss.detach()) if world == 1 else float(loss.detach()) * share
                advance(1)
    if world > 1 and spec.epochs * n_batches > 0:  # the last batch's mean loss over every process
        final_loss = sum(distributed.all_gather_object(final_loss))
    model.eval()
    layers = equilibria(model)
    return TrainResult(
        model=model,
        seconds=time.perf_counter() - start,
        recipe_settings=recipe.settings(),
        final_loss=final_loss,
        forward_evals=sum(layer.counters.forward_evals for layer in layers),
        backward_evals=sum(layer.counters.backward_evals for layer in layers),
    )
