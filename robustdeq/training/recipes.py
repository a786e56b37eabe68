"""Training recipes: how one batch becomes a loss. Registered by name for defense manifests."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdeq.config import Table
from robustdeq.deq import equilibria, grad_mode
from robustdeq.device import CPU
from robustdeq.distributed import unwrap
from robustdeq.errors import RobustdeqError
from robustdeq.evaluation.view import attack_model
from robustdeq.registry import Registry
from robustdeq.threat import ThreatModel, pgd, steepest_direction


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


RecipeFactory = Callable[[Table, ThreatModel], Recipe]
RECIPES: Registry[RecipeFactory] = Registry("training recipe")


@dataclass(frozen=True)
class Standard:
    """Cross-entropy on clean inputs."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, noise: BatchNoise) -> Tensor:
        return F.cross_entropy(model(x), y)

    def settings(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class PGDAT:
    """Madry et al. (2018) PGD adversarial training: cross-entropy on PGD examples only.

    The perturbation is found with the model in eval mode (for a DEQ: its attack-time
    gradient, each example's solves warm-started across the PGD steps by
    :func:`robustdeq.evaluation.view.attack_model`), then the loss is taken in training mode.
    ``eps`` and ``norm`` default to the protocol's threat model; ``step_size`` defaults to
    2.5 * eps / steps.
    """

    norm: str
    eps: float
    steps: int
    step_size: float
    random_start: bool

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, noise: BatchNoise) -> Tensor:
        threat = ThreatModel(self.norm, self.eps)
        inner = unwrap(model)  # the attack needs no gradient sync, and a DEQ's own warm starts
        was_training = inner.training
        inner.eval()
        attacked = attack_model(inner, x, threat)  # a DEQ's solves warm-start across the PGD steps
        start = noise.uniform(x) if self.random_start else None
        x_adv = pgd(attacked, x, y, threat, self.steps, self.step_size, self.random_start, start=start)
        inner.train(was_training)
        return F.cross_entropy(model(x_adv), y)

    def settings(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TRADES:
    """TRADES (Zhang et al. 2019): CE(f(x), y) + beta * KL(f(x) || f(x')).

    x' maximises KL(f(x) || f(x')) by ``steps`` sign (Linf) or normalised (L2) steps of
    ``step_size`` from x + 0.001 * N(0, I), projected onto the ball and [0, 1], with the model
    in eval mode (for a DEQ: its attack-time gradient). ``beta = 0`` skips the search: the
    loss is then exactly the standard cross-entropy.
    """

    norm: str
    eps: float
    steps: int
    step_size: float
    beta: float

    def perturb(self, model: nn.Module, x: Tensor, noise: BatchNoise) -> Tensor:
        threat = ThreatModel(self.norm, self.eps)
        model = unwrap(model)
        was_training = model.training
        model.eval()
        attacked = attack_model(model, x, threat)  # a DEQ's solves warm-start across the steps
        with torch.no_grad():
            target = F.softmax(attacked(x), dim=1)
        x_adv = threat.project(x + 0.001 * noise.normal(x), x)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(attacked(x_adv), dim=1), target, reduction="sum")
            (grad,) = torch.autograd.grad(kl, x_adv)
            with torch.no_grad():
                x_adv = threat.project(x_adv + self.step_size * steepest_direction(grad, self.norm), x)
        model.train(was_training)
        return x_adv.detach()

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, noise: BatchNoise) -> Tensor:
        x_adv = self.perturb(model, x, noise) if self.beta > 0 else None
        logits = model(x)
        natural = F.cross_entropy(logits, y)
        if x_adv is None:
            return natural
        robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return natural + self.beta * robust

    def settings(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RandomStates:
    """Random intermediate states (Yang, Li, Pang, Liu 2023): the solver stops after a random
    budget n ~ U{min_steps .. max_steps} of cell evaluations, so the ``base`` recipe's loss is
    taken on that intermediate state, differentiated with the phantom gradient (the manifest must
    set ``train_grad = "phantom"``). Evaluation always uses the full solver.

    ``draw = "forward"`` (the paper's code: ``mdeq_core.py`` draws ``randint(1, f_thres)`` in every
    forward call): each forward draws its own n, the clean and the adversarial forward of a batch
    and every forward of the inner attack alike; ``"batch"``: one n per batch, for every training
    forward of the batch. ``attack = "intermediate"`` (the paper's code: its inner TRADES attack
    calls the same randomly truncated model, with the same phantom gradient): the base recipe's
    inner attack runs on the random intermediate states too, with the phantom gradient and no warm
    starts; ``"full"``: the inner attack runs in eval mode on the full solve (attack-time gradient).
    """

    base: Recipe
    base_name: str
    min_steps: int
    max_steps: int
    draw: str = "forward"
    attack: str = "intermediate"

    def draw_budget(self, noise: BatchNoise) -> int:
        # from the batch's generator: under DDP every process makes the same draws in the same order
        return int(torch.randint(self.min_steps, self.max_steps + 1, (1,), generator=noise.generator, device=CPU))

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, noise: BatchNoise) -> Tensor:
        layers = equilibria(model)
        if not layers or any(layer.spec.train_grad != "phantom" for layer in layers):
            raise RobustdeqError('recipe ris: needs a DEQ with train_grad = "phantom" in [solver]')
        fixed = self.draw_budget(noise) if self.draw == "batch" else None

        def budget() -> int:
            return fixed if fixed is not None else self.draw_budget(noise)

        with ExitStack() as stack:
            for layer in layers:
                stack.enter_context(layer.budget(budget, eval_too=self.attack == "intermediate"))
            if self.attack == "intermediate":
                stack.enter_context(grad_mode(model, "phantom"))
            return self.base.loss(model, x, y, noise)

    def settings(self) -> dict[str, Any]:
        return {
            "base": self.base_name,
            "min_steps": self.min_steps,
            "max_steps": self.max_steps,
            "draw": self.draw,
            "attack": self.attack,
            "base_settings": self.base.settings(),
        }


@RECIPES.register("ris")
def make_random_states(table: Table, threat: ThreatModel) -> Recipe:
    base_name = table.choice("base", ("standard", "pgd_at", "trades"), "pgd_at")
    base = RECIPES.get(base_name)(table.table(base_name), threat)
    recipe = RandomStates(
        base,
        base_name,
        table.integer("min_steps", 1),
        table.integer("max_steps", 8),
        table.choice("draw", ("forward", "batch"), "forward"),
        table.choice("attack", ("intermediate", "full"), "intermediate"),
    )
    table.done()
    if not 1 <= recipe.min_steps <= recipe.max_steps:
        raise RobustdeqError(f"{table.where}: 1 <= min_steps <= max_steps is required")
    return recipe


@RECIPES.register("standard")
def make_standard(table: Table, threat: ThreatModel) -> Recipe:
    table.done()
    return Standard()


def _ball(table: Table, threat: ThreatModel) -> ThreatModel:
    """The training ball: ``norm`` and ``eps`` default to the protocol's threat model."""
    return ThreatModel(table.text("norm", threat.norm), table.number("eps", threat.eps))


def _steps(table: Table, ball: ThreatModel) -> tuple[int, float]:
    """``steps`` (default 7) and ``step_size`` (default 2.5 * eps / steps) of an inner attack."""
    steps = table.integer("steps", 7)
    step_size = table.number("step_size", 2.5 * ball.eps / max(steps, 1))
    if steps < 1 or step_size <= 0:
        raise RobustdeqError(f"{table.where}: steps >= 1 and step_size > 0 are required")
    return steps, step_size


@RECIPES.register("pgd_at")
def make_pgd_at(table: Table, threat: ThreatModel) -> Recipe:
    ball = _ball(table, threat)
    steps, step_size = _steps(table, ball)
    recipe = PGDAT(ball.norm, ball.eps, steps, step_size, table.flag("random_start", True))
    table.done()
    return recipe


@RECIPES.register("trades")
def make_trades(table: Table, threat: ThreatModel) -> Recipe:
    ball = _ball(table, threat)
    steps, step_size = _steps(table, ball)
    beta = table.number("beta", 6.0)
    table.done()
    if beta < 0:
        raise RobustdeqError(f"{table.where}: beta >= 0 is required")
    return TRADES(ball.norm, ball.eps, steps, step_size, beta)


@RECIPES.register("jiio")
def make_jiio(table: Table, threat: ThreatModel) -> Recipe:
    from robustdeq.training.jiio import JIIO

    ball = _ball(table, threat)
    recipe = JIIO(
        norm=ball.norm,
        eps=ball.eps,
        iterations=table.integer("iterations", 30),
        step_size=table.number("step_size", ball.eps / 4),
        b1=table.number("b1", 0.8),
        b2=table.number("b2", 0.6),
        anderson_m=table.integer("anderson_m", 5),
        step_size_late=table.number("step_size_late", None),
        switch_at=table.integer("switch_at", 0),
        warm_adjoint=table.flag("warm_adjoint", False),
    )
    table.done()
    if recipe.iterations < 2 or recipe.step_size <= 0 or not (0 < recipe.b1 <= 1 and 0 < recipe.b2 <= 1):
        raise RobustdeqError(f"{table.where}: iterations >= 2, step_size > 0, b1 and b2 in (0, 1] are required")
    if (
        recipe.anderson_m < 1
        or recipe.switch_at < 0
        or (recipe.step_size_late is not None and recipe.step_size_late <= 0)
    ):
        raise RobustdeqError(f"{table.where}: anderson_m >= 1, switch_at >= 0 and step_size_late > 0 are required")
    return recipe
