"""Training recipes: how one batch becomes a loss. Registered by name for defense manifests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdeq.config import Table
from robustdeq.registry import Registry
from robustdeq.threat import ThreatModel, pgd


class Recipe(Protocol):
    """Computes the training loss of one batch; ``settings()`` goes into the entry's provenance."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor: ...

    def settings(self) -> dict[str, Any]: ...


RecipeFactory = Callable[[Table, ThreatModel], Recipe]
RECIPES: Registry[RecipeFactory] = Registry("training recipe")


@dataclass(frozen=True)
class Standard:
    """Cross-entropy on clean inputs."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        return F.cross_entropy(model(x), y)

    def settings(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class PGDAT:
    """Madry et al. (2018) PGD adversarial training: cross-entropy on PGD examples only.

    The perturbation is found with the model in eval mode (for a DEQ: its attack-time
    gradient), then the loss is taken in training mode. ``eps`` and ``norm`` default to the
    protocol's threat model; ``step_size`` defaults to 2.5 * eps / steps.
    """

    norm: str
    eps: float
    steps: int
    step_size: float
    random_start: bool

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        threat = ThreatModel(self.norm, self.eps)
        was_training = model.training
        model.eval()
        x_adv = pgd(model, x, y, threat, self.steps, self.step_size, self.random_start, generator)
        model.train(was_training)
        return F.cross_entropy(model(x_adv), y)

    def settings(self) -> dict[str, Any]:
        return asdict(self)


@RECIPES.register("standard")
def make_standard(table: Table, threat: ThreatModel) -> Recipe:
    table.done()
    return Standard()


@RECIPES.register("pgd_at")
def make_pgd_at(table: Table, threat: ThreatModel) -> Recipe:
    from robustdeq.errors import RobustdeqError

    norm = table.text("norm", threat.norm)
    eps = table.number("eps", threat.eps)
    steps = table.integer("steps", 7)
    step_size = table.number("step_size", 2.5 * eps / max(steps, 1))
    random_start = table.flag("random_start", True)
    table.done()
    ThreatModel(norm, eps)  # validates norm and eps
    if steps < 1 or step_size <= 0:
        raise RobustdeqError(f"{table.where}: steps >= 1 and step_size > 0 are required")
    return PGDAT(norm, eps, steps, step_size, random_start)
