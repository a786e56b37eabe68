"""JIIO: joint inference and input optimisation (Gurumurthy, Bai, Manchester, Kolter, NeurIPS 2021).

Instead of an outer attack loop around an inner DEQ solve, one fixed point is solved over the
stacked state s = (z, delta, mu): the hidden state, the input perturbation and the adjoint.
With g = -CE(head(z), y) (the attacker minimises g):

    z'     = z + b1 (f(z, x + delta) - z)
    mu'    = mu + b2 (dg/dz + J_z^T mu - mu)          J_z = df/dz at (z, x + delta)
    u      = (df/ddelta)^T mu                          the adjoint estimate of dg/ddelta
    delta' = Proj(delta - a * dir(u))                  dir: sign (Linf) or u / |u| (L2)

At the joint fixed point z = f(z, x + delta), mu solves the IFT adjoint equation, and u is the
exact input gradient of g, so delta is a projected-gradient stationary point. The map is
iterated with torchdeq's Anderson acceleration (memory ``anderson_m``) for ``iterations`` steps;
the input step is ``step_size`` for the first ``switch_at`` map evaluations and
``step_size_late`` after (the paper's code, locuslab/JIIO-DEQ ``deq2d.py``: 0.6 then 0.2 from
iteration 50 of 80 on MNIST). Each step costs one cell evaluation and one vector-Jacobian
product, against a full forward and backward solve for every step of PGD; they are added to the
model's equilibrium counters.

As a training recipe, the perturbation found jointly is the training perturbation, and the
training forward on x + delta is warm-started from the joint z; with ``warm_adjoint`` its
implicit backward solve also starts from the joint adjoint (the paper's code starts its
backward Broyden solve from -mu). The paper's Jacobian regularisation is the DEQ's own
``[solver] jac_reg``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchdeq.solver import get_solver

from robustdeq.deq import equilibria
from robustdeq.distributed import unwrap
from robustdeq.errors import RobustdeqError
from robustdeq.records.parse import parse
from robustdeq.threat import ThreatModel, steepest_direction
from robustdeq.training.base import RECIPES, BallSettings, BatchNoise, Recipe


@dataclass
class JIIOResult:
    x_adv: Tensor
    z: Tensor
    rel_trace: Tensor  # (B, iterations) relative residual of the joint map per iteration
    adjoint: Tensor  # the joint adjoint in the IFT backward's per-example normalised units (B, ...)
    step_sizes: list[float]  # the input step used at each map evaluation


@dataclass(frozen=True)
class JIIO:
    """The JIIO attack and training recipe; settings as in the module docstring."""

    norm: str
    eps: float
    iterations: int = 30
    step_size: float = 0.05
    b1: float = 0.8
    b2: float = 0.6
    anderson_m: int = 5
    step_size_late: float | None = None  # the input step from map evaluation ``switch_at`` on (None: no switch)
    switch_at: int = 0
    warm_adjoint: bool = False

    def settings(self) -> dict[str, Any]:
        return asdict(self)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> JIIOResult:
        """Jointly solve for (z, delta, mu) on ``model`` (a DEQ family with ``cell_function``)."""
        from robustdeq.models.deq import DEQClassifier

        if not isinstance(model, DEQClassifier):
            raise RobustdeqError(f"recipe jiio needs the deq model family, got {type(model).__name__}")
        threat = ThreatModel(self.norm, self.eps)
        layer = model.equilibrium
        cell = model.cell_function()
        batch = x.shape[0]
        z_shape = (batch, *model.state_shape)
        nz, nd = int(torch.Size(z_shape[1:]).numel()), int(x[0].numel())

        def split(s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            z, d, mu = torch.split(s, [nz, nd, nz], dim=1)
            return z.reshape(z_shape), d.reshape(x.shape), mu.reshape(z_shape)

        steps: list[float] = []  # the input step of each map evaluation, in order

        def joint_map(s: Tensor) -> Tensor:
            late = self.step_size_late is not None and len(steps) >= self.switch_at
            step = self.step_size_late if late and self.step_size_late is not None else self.step_size
            steps.append(step)
            z, delta, mu = split(s)
            delta = threat.project(x + delta, x) - x
            with torch.enable_grad():
                z = z.detach().requires_grad_(True)
                delta = delta.detach().requires_grad_(True)
                fz = cell(z, x + delta)
                g = -F.cross_entropy(model.head(z), y, reduction="sum")
                (dg_dz,) = torch.autograd.grad(g, z)
                jz_mu, jd_mu = torch.autograd.grad(fz, (z, delta), mu)
            layer.counters.forward_evals += 1
            layer.counters.forward_example_evals += batch
            layer.counters.backward_evals += 1
            z_next = z + self.b1 * (fz - z)
            mu_next = mu + self.b2 * (dg_dz + jz_mu - mu)
            d_next = threat.project(x + delta - step * steepest_direction(jd_mu, self.norm), x) - x
            return torch.cat([z_next.flatten(1), d_next.flatten(1), mu_next.flatten(1)], dim=1).detach()

        s0 = x.new_zeros(batch, 2 * nz + nd)
        with torch.no_grad():
            s, _, info = get_solver("anderson")(
                joint_map, s0, max_iter=self.iterations, tol=1e-12, stop_mode="rel", m=self.anderson_m,
                lam=1e-8, return_final=True,
            )  # fmt: skip
        z, delta, mu = split(s)
        x_adv = threat.project(x + delta, x)
        # mu solves mu = J^T mu + dg/dz with g = -CE; the IFT backward of the training loss solves
        # a = J^T a + t with t = dCE/dz / |dCE/dz| per example, so a = -mu / |dg/dz|.
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            (dg_dz,) = torch.autograd.grad(-F.cross_entropy(model.head(zz), y, reduction="sum"), zz)
        scale = dg_dz.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (dg_dz.dim() - 1)))
        return JIIOResult(x_adv.detach(), z.detach(), info["rel_trace"].detach(), (-mu / scale).detach(), steps)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, noise: BatchNoise) -> Tensor:
        inner = unwrap(model)  # the joint solve runs on the DEQ itself; the loss through DDP if any
        was_training = inner.training
        inner.eval()
        found = self.perturb(inner, x, y)
        inner.train(was_training)
        if not self.warm_adjoint:
            return F.cross_entropy(model(found.x_adv, z_init=found.z), y)
        layer = equilibria(inner)[0]
        with layer.adjoint_start(found.adjoint):
            return F.cross_entropy(model(found.x_adv, z_init=found.z), y)


class JIIOSettings(BallSettings):
    """``[train.jiio]``: the ball and the joint solve's settings (see :class:`JIIO`); ``step_size``
    defaults to eps / 4."""

    iterations: int = 30
    step_size: float | None = None
    b1: float = 0.8
    b2: float = 0.6
    anderson_m: int = 5
    step_size_late: float | None = None
    switch_at: int = 0
    warm_adjoint: bool = False


@RECIPES.register("jiio")
def make_jiio(settings: Mapping[str, Any], threat: ThreatModel, where: str = "[train.jiio]") -> Recipe:
    s = parse(JIIOSettings, settings, where)
    ball = s.ball(threat)
    recipe = JIIO(
        norm=ball.norm,
        eps=ball.eps,
        iterations=s.iterations,
        step_size=s.step_size if s.step_size is not None else ball.eps / 4,
        b1=s.b1,
        b2=s.b2,
        anderson_m=s.anderson_m,
        step_size_late=s.step_size_late,
        switch_at=s.switch_at,
        warm_adjoint=s.warm_adjoint,
    )
    if recipe.iterations < 2 or recipe.step_size <= 0 or not (0 < recipe.b1 <= 1 and 0 < recipe.b2 <= 1):
        raise RobustdeqError(f"{where}: iterations >= 2, step_size > 0, b1 and b2 in (0, 1] are required")
    if (
        recipe.anderson_m < 1
        or recipe.switch_at < 0
        or (recipe.step_size_late is not None and recipe.step_size_late <= 0)
    ):
        raise RobustdeqError(f"{where}: anderson_m >= 1, switch_at >= 0 and step_size_late > 0 are required")
    return recipe
