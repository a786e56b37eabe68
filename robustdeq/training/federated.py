"""Federated DEQ training (Gkillas, Ampeliotis, Berberidis, "Deep Equilibrium Models Meet Federated Learning",
EUSIPCO 2023, arXiv 2305.18646).

``recipe = "federated"``: K clients, simulated in this process, each hold a part of the
training set, train a copy of the global model locally with a recipe of their own (standard,
pgd_at, trades) for ``local_epochs`` and under their own solver budget (``client_max_iter``:
the cap on forward and backward solver iterations, the compute the client can afford), and
send it back; the server fuses the client models into the next global model. ``[train]
epochs`` counts communication rounds. Round r, client k trains with the seed stream
``seed + 1000 * (r * K + k)``, so one client in one round is exactly centralised training.

Partitions: ``iid`` (a random split into K nearly equal parts) or ``label_skew`` (McMahan et
al. 2017's shards: the examples sorted by label, cut into K * ``classes_per_client`` shards,
``classes_per_client`` random shards per client, so each client sees about that many classes).
Each client keeps ``validation_fraction`` of its part out of training (its validation part).

Fusion, a weighted average of the client models' parameters and buffers:

- ``fedavg``: w_k = n_k / sum_j n_j, n_k the client's training examples (McMahan et al. 2017).
- ``quality``: w_k = n_k q_k / sum_j n_j q_j, q_k the accuracy of client k's updated model on its
  own validation part, with the full solver budget the fused model runs with. The paper weights
  clients by the quality of their models; its formula was not retrievable here (only the
  abstract was), so this one is ours (a deviation in the manifests): it keeps
  FedAvg's weighting by data size, down-weights clients whose local model is worse (a small
  solver budget, a skewed label set), needs no data at the server and one number more per
  client, and is FedAvg when the qualities are equal. If every q_k is 0 it falls back to FedAvg.

Communication: per round the server sends the global model (every parameter and buffer, its
bytes) to each client and each client sends its model back; both counts go into the record.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from robustdeq.deq import equilibria, solver_budget
from robustdeq.device import CPU
from robustdeq.errors import RobustdeqError
from robustdeq.progress import Progress
from robustdeq.records.defense import TrainSpec
from robustdeq.records.parse import parse
from robustdeq.threat import ThreatModel
from robustdeq.training.base import RECIPES, BatchNoise, Recipe, WithSubRecipe, make_recipe
from robustdeq.training.loop import run_epochs

PARTITIONS = ("iid", "label_skew")
FUSIONS = ("fedavg", "quality")


class Monitor(Protocol):
    """Measures the fused model after each round: ``{"clean_accuracy": ..., "pgd_accuracy": ...}``."""

    @property
    def description(self) -> str: ...

    def __call__(self, model: nn.Module) -> dict[str, float]: ...


@dataclass(frozen=True)
class Federated:
    """The federated recipe's settings; a batch's loss is the local recipe's."""

    local: Recipe
    local_recipe: str
    clients: int
    partition: str
    classes_per_client: int
    client_max_iter: tuple[int, ...]
    local_epochs: int
    fusion: str
    validation_fraction: float

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, noise: BatchNoise) -> Tensor:
        return self.local.loss(model, x, y, noise)

    def settings(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "partition": self.partition,
            "classes_per_client": self.classes_per_client,
            "client_max_iter": list(self.client_max_iter),
            "local_epochs": self.local_epochs,
            "fusion": self.fusion,
            "validation_fraction": self.validation_fraction,
            "local_recipe": self.local_recipe,
            "local_settings": self.local.settings(),
        }


class FederatedSettings(WithSubRecipe):
    """``[train.federated]``: the clients, their split, budgets and local recipe (its settings in
    ``[train.federated.<local_recipe>]``), and the fusion (see the module docstring)."""

    clients: int = 4
    local_recipe: str = "standard"
    client_max_iter: list[int] = []
    fusion: Literal["fedavg", "quality"] = "fedavg"
    partition: Literal["iid", "label_skew"] = "iid"
    classes_per_client: int = 2
    local_epochs: int = 1
    validation_fraction: float | None = None  # default: 0.1 for quality fusion, else 0

    def sub_recipe(self) -> str:
        return self.local_recipe


@RECIPES.register("federated")
def make_federated(settings: Mapping[str, Any], threat: ThreatModel, where: str = "[train.federated]") -> Recipe:
    s = parse(FederatedSettings, settings, where)
    if s.local_recipe == "federated":
        raise RobustdeqError(f"{where}: local_recipe cannot be federated")
    local = make_recipe(s.local_recipe, s.sub_settings(), threat, f"{where} [{s.local_recipe}]")
    if any(b < 1 for b in s.client_max_iter):
        raise RobustdeqError(f"{where}: client_max_iter must be >= 1")
    fraction = s.validation_fraction if s.validation_fraction is not None else 0.1 if s.fusion == "quality" else 0.0
    recipe = Federated(
        local=local,
        local_recipe=s.local_recipe,
        clients=s.clients,
        partition=s.partition,
        classes_per_client=s.classes_per_client,
        client_max_iter=tuple(s.client_max_iter),
        local_epochs=s.local_epochs,
        fusion=s.fusion,
        validation_fraction=fraction,
    )
    if s.clients < 1 or recipe.local_epochs < 1 or recipe.classes_per_client < 1:
        raise RobustdeqError(f"{where}: clients, local_epochs and classes_per_client must be >= 1")
    if s.client_max_iter and len(s.client_max_iter) != s.clients:
        raise RobustdeqError(f"{where}: client_max_iter needs one budget per client ({s.clients})")
    if not 0.0 <= recipe.validation_fraction < 1.0:
        raise RobustdeqError(f"{where}: validation_fraction must be in [0, 1)")
    if recipe.fusion == "quality" and recipe.validation_fraction == 0.0:
        raise RobustdeqError(f"{where}: quality fusion needs validation_fraction > 0")
    return recipe


def partition(
    y: Tensor, clients: int, scheme: str, classes_per_client: int, generator: torch.Generator
) -> list[Tensor]:
    """Indices (sorted) of each client's part of the labels ``y``; the parts cover every index once."""
    if scheme == "iid":
        order = torch.randperm(len(y), generator=generator, device=CPU)
        return [part.sort().values for part in order.tensor_split(clients)]
    if scheme != "label_skew":
        raise RobustdeqError(f"unknown partition {scheme!r} (known: {', '.join(PARTITIONS)})")
    shards = torch.argsort(y, stable=True).tensor_split(clients * classes_per_client)
    assignment = torch.randperm(len(shards), generator=generator, device=CPU)
    per = classes_per_client
    picks = [assignment[k * per : (k + 1) * per] for k in range(clients)]
    return [torch.cat([shards[int(s)] for s in pick]).sort().values for pick in picks]


def fusion_weights(sizes: list[int], qualities: list[float], fusion: str) -> list[float]:
    """The server's weights (they sum to one): see the module docstring."""
    scores = [float(n) for n in sizes]
    if fusion == "quality" and sum(n * q for n, q in zip(sizes, qualities, strict=True)) > 0:
        scores = [n * q for n, q in zip(sizes, qualities, strict=True)]
    total = sum(scores)
    return [s / total for s in scores]


def fuse(states: list[dict[str, Tensor]], weights: list[float]) -> dict[str, Tensor]:
    """Weighted average of the clients' state dicts (non-float entries from the heaviest client)."""
    heaviest = max(range(len(weights)), key=weights.__getitem__)
    fused: dict[str, Tensor] = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            fused[key] = sum((w * s[key] for w, s in zip(weights, states, strict=True)), torch.zeros_like(first))
        else:
            fused[key] = states[heaviest][key].clone()
    return fused


def state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train_federated(
    model: nn.Module,
    recipe: Federated,
    x: Tensor,
    y: Tensor,
    spec: TrainSpec,
    progress: Progress,
    name: str,
    monitor: Monitor | None = None,
) -> tuple[float, dict[str, Any]]:
    """Train ``model`` (the global model, updated in place) for ``spec.epochs`` rounds.

    Returns the last local batch loss and the record: per round the fusion weights, each
    client's validation accuracy, solver cap and mean solver iterations per training forward,
    the bytes sent each way, and the fused model's monitored accuracies.
    """
    k_clients = recipe.clients
    split_rng = torch.Generator(CPU).manual_seed(spec.seed)
    # The split is drawn on the CPU (a CPU generator); each client's rows then index the data on its device.
    parts = partition(y.to(CPU), k_clients, recipe.partition, recipe.classes_per_client, split_rng)
    train_parts, val_parts = [], []
    for part in parts:
        n_val = round(recipe.validation_fraction * len(part))
        if n_val:
            order = torch.randperm(len(part), generator=split_rng, device=CPU)
        else:
            order = torch.arange(len(part), device=CPU)
        val_parts.append(part[order[:n_val]].sort().values)
        train_parts.append(part[order[n_val:]].sort().values)
    if any(len(p) == 0 for p in train_parts):
        raise RobustdeqError(f"{name}: a client has no training examples ({len(y)} examples, {k_clients} clients)")
    budgets = recipe.client_max_iter or (None,) * k_clients
    size = state_bytes(model)
    rounds: list[dict[str, Any]] = []
    final_loss = float("nan")
    batches = sum((len(p) + spec.batch_size - 1) // spec.batch_size for p in train_parts)
    with progress.task(f"train {name}", total=spec.epochs * recipe.local_epochs * batches) as advance:
        for r in range(spec.epochs):
            states, qualities, steps = [], [], []
            for k in range(k_clients):
                client = copy.deepcopy(model)
                layers = equilibria(client)
                for layer in layers:
                    layer.counters.reset()
                idx = train_parts[k].to(x.device)
                with solver_budget(client, cap=budgets[k]):
                    stream = spec.seed + 1000 * (r * k_clients + k)
                    final_loss = run_epochs(
                        client, recipe.local, x[idx], y[idx], spec, recipe.local_epochs, stream, advance
                    )
                calls = sum(layer.counters.forward_calls for layer in layers)
                evals = sum(layer.counters.forward_evals for layer in layers)
                steps.append(evals / calls if calls else 0.0)
                held_out = val_parts[k].to(x.device)
                qualities.append(_accuracy(client, x[held_out], y[held_out]))
                states.append(client.state_dict())
            sizes = [len(p) for p in train_parts]
            weights = fusion_weights(sizes, [0.0 if math.isnan(q) else q for q in qualities], recipe.fusion)
            model.load_state_dict(fuse(states, weights))
            record: dict[str, Any] = {
                "round": r + 1,
                "weights": weights,
                "client_quality": [None if math.isnan(q) else q for q in qualities],
                "client_max_iter": [b if b is not None else _max_iter(model) for b in budgets],
                "client_evals_per_forward": steps,
                "bytes_to_clients": size * k_clients,
                "bytes_to_server": size * k_clients,
                "clean_accuracy": None,
                "pgd_accuracy": None,
            }
            if monitor is not None:
                record.update(monitor(model))
            model.train()
            rounds.append(record)
    record_all = {
        "fusion": recipe.fusion,
        "clients": k_clients,
        "client_examples": [len(p) for p in train_parts],
        "client_labels": [sorted({int(v) for v in y.to(CPU)[p]}) for p in train_parts],
        "monitor": monitor.description if monitor is not None else "none",
        "rounds": rounds,
    }
    return final_loss, record_all


def _max_iter(model: nn.Module) -> int:
    layers = equilibria(model)
    return layers[0].spec.f_max_iter if layers else 0
