"""Training recipes: how one batch becomes a loss. Registered by name for defense manifests."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdeq.deq import equilibria, grad_mode
from robustdeq.device import CPU
from robustdeq.distributed import unwrap
from robustdeq.errors import RobustdeqError
from robustdeq.evaluation.view import attack_model
from robustdeq.records.parse import Settings, parse
from robustdeq.threat import ThreatModel, pgd, steepest_direction
from robustdeq.training.base import RECIPES, BatchNoise, Recipe, StepSettings, WithSubRecipe, make_recipe


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


class RandomStatesSettings(WithSubRecipe):
    """``[train.ris]``: the base recipe (its settings in ``[train.ris.<base>]``) and the budget draw."""

    base: Literal["standard", "pgd_at", "trades"] = "pgd_at"
    min_steps: int = 1
    max_steps: int = 8
    draw: Literal["forward", "batch"] = "forward"
    attack: Literal["intermediate", "full"] = "intermediate"

    def sub_recipe(self) -> str:
        return self.base


@RECIPES.register("ris")
def make_random_states(settings: Mapping[str, Any], threat: ThreatModel, where: str = "[train.ris]") -> Recipe:
    s = parse(RandomStatesSettings, settings, where)
    if not 1 <= s.min_steps <= s.max_steps:
        raise RobustdeqError(f"{where}: 1 <= min_steps <= max_steps is required")
    base = make_recipe(s.base, s.sub_settings(), threat, f"{where} [{s.base}]")
    return RandomStates(base, s.base, s.min_steps, s.max_steps, s.draw, s.attack)


@RECIPES.register("standard")
def make_standard(settings: Mapping[str, Any], threat: ThreatModel, where: str = "[train.standard]") -> Recipe:
    parse(Settings, settings, where)  # no settings
    return Standard()


class PGDATSettings(StepSettings):
    """``[train.pgd_at]``: the ball, the inner PGD's steps and step size, its random start."""

    random_start: bool = True


@RECIPES.register("pgd_at")
def make_pgd_at(settings: Mapping[str, Any], threat: ThreatModel, where: str = "[train.pgd_at]") -> Recipe:
    s = parse(PGDATSettings, settings, where)
    ball = s.ball(threat)
    return PGDAT(ball.norm, ball.eps, s.steps, s.step(ball), s.random_start)


class TRADESSettings(StepSettings):
    """``[train.trades]``: the ball, the inner attack's steps and step size, and beta."""

    beta: float = 6.0


@RECIPES.register("trades")
def make_trades(settings: Mapping[str, Any], threat: ThreatModel, where: str = "[train.trades]") -> Recipe:
    s = parse(TRADESSettings, settings, where)
    if s.beta < 0:
        raise RobustdeqError(f"{where}: beta >= 0 is required")
    ball = s.ball(threat)
    return TRADES(ball.norm, ball.eps, s.steps, s.step(ball), s.beta)
