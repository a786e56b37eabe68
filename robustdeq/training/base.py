"""What every training recipe shares: the recipe protocol, the registry, the batch's random numbers,
and the settings every adversarial recipe reads (its ball and its inner attack's steps)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from pydantic import ConfigDict, model_validator
from torch import Tensor, nn

from robustdeq.device import CPU
from robustdeq.records.parse import Settings
from robustdeq.registry import Registry
from robustdeq.threat import ThreatModel


@dataclass(frozen=True)
class BatchNoise:
    """The random numbers of one training batch of ``size`` rows, of which this process holds ``rows``.

    Recipes draw their noise here rather than from the generator itself: under DDP every process
    draws the numbers of the whole global batch from its copy of the shared generator (same seed)
    and keeps its own rows, so each example gets exactly the numbers a single process would give
    it and the generators of all processes stay in step. In a single process ``rows`` is every
    row and the draws are those of ``torch.rand(x.shape, generator=generator)``. The generator is a
    CPU generator and the numbers are moved to the batch's device, so they do not depend on it.
    """

    generator: torch.Generator
    size: int
    rows: slice = field(default_factory=lambda: slice(None))

    def uniform(self, like: Tensor) -> Tensor:
        """U[0, 1) numbers shaped like ``like`` (this process's rows of the batch), on its device."""
        shape = (self.size, *like.shape[1:])
        return torch.rand(shape, generator=self.generator, dtype=like.dtype, device=CPU)[self.rows].to(like.device)

    def normal(self, like: Tensor) -> Tensor:
        """N(0, 1) numbers shaped like ``like`` (this process's rows of the batch), on its device."""
        shape = (self.size, *like.shape[1:])
        return torch.randn(shape, generator=self.generator, dtype=like.dtype, device=CPU)[self.rows].to(like.device)


class Recipe(Protocol):
    """Computes the training loss of one batch; ``settings()`` goes into the entry's provenance.

    ``model`` may be a DistributedDataParallel wrapper: the training loss goes through it (so its
    gradient is averaged over the processes), an inner attack through ``distributed.unwrap(model)``.
    """

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, noise: BatchNoise) -> Tensor: ...

    def settings(self) -> dict[str, Any]: ...


# (the recipe's settings table, the protocol's threat model, where the table is for errors) -> recipe
RecipeFactory = Callable[[Mapping[str, Any], ThreatModel, str], Recipe]
RECIPES: Registry[RecipeFactory] = Registry("training recipe")


def make_recipe(name: str, settings: Mapping[str, Any], threat: ThreatModel, where: str) -> Recipe:
    """The registered recipe ``name`` with its settings (an unknown name lists the known ones)."""
    return RECIPES.get(name)(settings, threat, where)


class BallSettings(Settings):
    """The training ball: ``norm`` and ``eps`` default to the protocol's threat model."""

    norm: Literal["Linf", "L2"] | None = None
    eps: float | None = None

    def ball(self, threat: ThreatModel) -> ThreatModel:
        return ThreatModel(self.norm or threat.norm, self.eps if self.eps is not None else threat.eps)


class StepSettings(BallSettings):
    """An inner attack's ``steps`` (default 7) and ``step_size`` (default 2.5 * eps / steps)."""

    steps: int = 7
    step_size: float | None = None

    @model_validator(mode="after")
    def _positive(self) -> StepSettings:
        if self.steps < 1 or (self.step_size is not None and self.step_size <= 0):
            raise ValueError("steps >= 1 and step_size > 0 are required")
        return self

    def step(self, ball: ThreatModel) -> float:
        return self.step_size if self.step_size is not None else 2.5 * ball.eps / max(self.steps, 1)


class WithSubRecipe(Settings):
    """Settings of a recipe that wraps another: the wrapped recipe's own settings are the sub-table
    named after it (``[train.ris.pgd_at]``); no other sub-table is allowed."""

    model_config = ConfigDict(extra="allow")

    def sub_recipe(self) -> str:
        raise NotImplementedError

    @model_validator(mode="after")
    def _only_the_sub_recipe(self) -> WithSubRecipe:
        for key, value in (self.model_extra or {}).items():
            if key != self.sub_recipe():
                raise ValueError(f"unknown field {key!r}")
            if not isinstance(value, dict):
                raise ValueError(f"field {key!r} must be a table of the recipe's settings")
        return self

    def sub_settings(self) -> dict[str, Any]:
        return dict((self.model_extra or {}).get(self.sub_recipe(), {}))


def ramped(recipe: Recipe, fraction: float) -> Recipe:
    """``recipe`` with its training attack's ``eps`` and step sizes scaled by ``fraction`` (the eps
    warm-up, ``[train] eps_warmup_epochs``), a wrapped ``base`` recipe's too; a recipe without an
    attack, or ``fraction >= 1``, as it is."""
    if fraction >= 1 or not dataclasses.is_dataclass(recipe) or isinstance(recipe, type):
        return recipe
    names = {f.name for f in dataclasses.fields(recipe)}
    changes: dict[str, Any] = {}
    if "base" in names:
        changes["base"] = ramped(vars(recipe)["base"], fraction)
    for key in ("eps", "step_size", "step_size_late"):
        value = getattr(recipe, key, None)
        if key in names and value is not None:
            changes[key] = value * fraction
    return dataclasses.replace(recipe, **changes) if changes else recipe
