"""The equilibrium layer every DEQ model in robustdeq shares (the only code that talks to torchdeq).

Given a cell ``f`` (a closure over the input x), :class:`Equilibrium` finds z* = f(z*) with a
torchdeq solver (fixed-point iteration, Anderson or Broyden) from ``z0`` (zeros or a warm
start) and attaches gradients in one of three ways:

- ``ift``: exact implicit differentiation (Bai et al. 2019): the backward pass solves
  g = J_f(z*)^T g + dL/dz* with the backward solver (``b_*`` settings), normalised per
  example (see :class:`_ImplicitGrad`).
- ``phantom``: ``phantom_steps`` damped steps z <- (1 - tau) z + tau f(z) on top of z*,
  differentiated through (Geng et al. 2021). Approximate.
- ``unroll``: backpropagation through ``f_max_iter`` plain fixed-point iterations from ``z0``
  (torchdeq's Anderson and Broyden detach their iterates, so they cannot be unrolled; for a
  contractive cell the unrolled iterate converges to the same z*).

Why this module exists: torchdeq returns a detached z* in ``eval()`` mode, and attack
libraries (torchattacks, AutoAttack) switch models to ``eval()``; an attack would then see no
input gradient and report robustness that is not there. Here the gradient is attached
whenever autograd is on, in training *and* in eval mode: ``train_grad`` picks the mode in
training, ``attack_grad`` in eval, and :meth:`Equilibrium.grad_mode` overrides both.

Every forward records per-example solver statistics in :attr:`Equilibrium.last_stats` and
adds its function evaluations to :attr:`Equilibrium.counters`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchdeq.loss import jac_reg, power_method
from torchdeq.solver import get_solver

from robustdeq.errors import RobustdeqError

SOLVERS = ("anderson", "broyden", "fixed_point_iter")
GRAD_MODES = ("ift", "phantom", "unroll")
STOP_MODES = ("abs", "rel")


@dataclass(frozen=True)
class SolverSpec:
    """Forward/backward solver settings (torchdeq's ``f_*`` / ``b_*`` naming) and gradient modes.

    ``anderson_lam`` is Anderson's Tikhonov regulariser; torchdeq's default 1e-4 is absolute
    and stalls the solve once residuals are small (about 1e-2 of the state), so we use 1e-8.
    ``jac_reg`` is the weight of torchdeq's Jacobian penalty |J_f(z*)|_F^2 (Hutchinson
    estimate, Bai et al. 2021) added to the training loss; 0 disables it.
    """

    f_solver: str = "anderson"
    f_max_iter: int = 40
    f_tol: float = 1e-3
    f_stop_mode: str = "rel"
    b_solver: str = "anderson"
    b_max_iter: int = 40
    b_tol: float = 1e-3
    b_stop_mode: str = "rel"
    train_grad: str = "ift"
    attack_grad: str = "ift"
    phantom_steps: int = 5
    phantom_tau: float = 0.5
    anderson_lam: float = 1e-8
    jac_reg: float = 0.0

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("f_solver", self.f_solver, SOLVERS),
            ("b_solver", self.b_solver, SOLVERS),
            ("f_stop_mode", self.f_stop_mode, STOP_MODES),
            ("b_stop_mode", self.b_stop_mode, STOP_MODES),
            ("train_grad", self.train_grad, GRAD_MODES),
            ("attack_grad", self.attack_grad, GRAD_MODES),
        ):
            if value not in allowed:
                raise RobustdeqError(f"solver: {name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.f_max_iter < 1 or self.b_max_iter < 1 or self.phantom_steps < 1:
            raise RobustdeqError("solver: f_max_iter, b_max_iter and phantom_steps must be >= 1")
        if not 0.0 < self.phantom_tau <= 1.0:
            raise RobustdeqError("solver: phantom_tau must be in (0, 1]")
        if self.jac_reg < 0:
            raise RobustdeqError("solver: jac_reg must be >= 0")
        if self.f_tol <= 0 or self.b_tol <= 0:
            raise RobustdeqError("solver: f_tol and b_tol must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SolverStats:
    """Per-example statistics of one forward solve (all tensors have leading size B).

    ``nstep``: solver step at which the reported (lowest-residual) state was reached;
    ``abs_residual`` = |f(z) - z|, ``rel_residual`` = |f(z) - z| / |f(z)|;
    ``converged``: the stop-mode residual is within ``f_tol``;
    ``rel_trace``: relative residual after each solver step, shape (B, steps);
    ``spectral_radius``: |largest eigenvalue| of J_f(z*) per example, only inside
    :meth:`Equilibrium.measure_spectral_radius` (else None).
    """

    nstep: Tensor
    abs_residual: Tensor
    rel_residual: Tensor
    converged: Tensor
    rel_trace: Tensor
    spectral_radius: Tensor | None = None


@dataclass
class Counters:
    """Function evaluations of the cell, counted per batch call (NFE) and per example."""

    forward_calls: int = 0
    forward_evals: int = 0
    forward_example_evals: int = 0
    backward_evals: int = 0

    def reset(self) -> None:
        self.forward_calls = self.forward_evals = self.forward_example_evals = 0
        self.backward_evals = 0


class Equilibrium(nn.Module):
    """Solves z* = f(z*) and attaches the chosen gradient; see the module docstring."""

    def __init__(self, spec: SolverSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or SolverSpec()
        self.last_stats: SolverStats | None = None
        self.last_backward_converged: Tensor | None = None
        self.jac_loss: Tensor | None = None
        self._measure_sradius = False
        self.counters = Counters()
        self._override: str | None = None

    @contextmanager
    def grad_mode(self, mode: str) -> Iterator[None]:
        """Use gradient ``mode`` for every forward inside the block, in train and eval mode."""
        if mode not in GRAD_MODES:
            raise RobustdeqError(f"unknown gradient mode {mode!r} (known: {', '.join(GRAD_MODES)})")
        previous, self._override = self._override, mode
        try:
            yield
        finally:
            self._override = previous

    @contextmanager
    def measure_spectral_radius(self) -> Iterator[None]:
        """Inside the block, every forward also estimates the spectral radius of J_f(z*)."""
        previous, self._measure_sradius = self._measure_sradius, True
        try:
            yield
        finally:
            self._measure_sradius = previous

    @property
    def active_grad_mode(self) -> str:
        if self._override is not None:
            return self._override
        return self.spec.train_grad if self.training else self.spec.attack_grad

    def forward(self, f: Callable[[Tensor], Tensor], z0: Tensor) -> Tensor:
        """Fixed point of ``f`` from ``z0`` (B, ...); differentiable when autograd is on."""
        spec = self.spec
        batch = z0.shape[0]

        def counted(z: Tensor) -> Tensor:
            self.counters.forward_evals += 1
            self.counters.forward_example_evals += batch
            return f(z)

        solver = get_solver(spec.f_solver)
        with torch.no_grad():
            z_star, _, info = solver(
                counted,
                z0.detach(),
                max_iter=spec.f_max_iter,
                tol=spec.f_tol,
                stop_mode=spec.f_stop_mode,
                lam=spec.anderson_lam,
            )
        self.counters.forward_calls += 1
        residual = info["rel_lowest"] if spec.f_stop_mode == "rel" else info["abs_lowest"]
        self.last_stats = SolverStats(
            nstep=info["nstep"].detach().to(torch.int64),
            abs_residual=info["abs_lowest"].detach(),
            rel_residual=info["rel_lowest"].detach(),
            converged=(residual <= spec.f_tol).detach(),
            rel_trace=info["rel_trace"].detach(),
            spectral_radius=self._spectral_radius(f, z_star) if self._measure_sradius else None,
        )
        if self.training and spec.jac_reg > 0 and torch.is_grad_enabled():
            z = z_star.detach().requires_grad_(True)
            self.jac_loss = jac_reg(counted(z), z, vecs=1, create_graph=True)
        if not torch.is_grad_enabled():
            return z_star

        mode = self.active_grad_mode
        if mode == "ift":
            return self._ift(counted, z_star)
        if mode == "phantom":
            tau = spec.phantom_tau
            z = z_star
            for _ in range(spec.phantom_steps):
                z = (1.0 - tau) * z + tau * counted(z)
            return z
        z = z0
        for _ in range(spec.f_max_iter):
            z = counted(z)
        return z

    @staticmethod
    def _spectral_radius(f: Callable[[Tensor], Tensor], z_star: Tensor) -> Tensor:
        with torch.enable_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            z = z_star.detach().requires_grad_(True)
            _, radius = power_method(f(z), z, n_iters=50)
        return radius.detach()

    def _ift(self, f: Callable[[Tensor], Tensor], z_star: Tensor) -> Tensor:
        z_star = z_star.detach()
        return _ImplicitGrad.apply(self, f, f(z_star))


class _ImplicitGrad(torch.autograd.Function):
    """Identity on f(z*) whose backward solves g = J_f(z*)^T g + grad (the IFT adjoint).

    The adjoint system is linear in ``grad``, so it is solved for grad / |grad| per example
    and rescaled. Without this, Anderson's absolute regulariser (lam = 1e-4) swamps the
    tiny residuals of confidently classified examples (|dL/dz*| ~ 1e-6) and the backward
    solve stalls at a 1% relative residual: the gradient an attacker gets would be wrong.
    """

    @staticmethod
    def forward(ctx: Any, layer: Equilibrium, f: Callable[[Tensor], Tensor], fz: Tensor) -> Tensor:
        ctx.layer, ctx.f = layer, f
        ctx.save_for_backward(fz.detach())
        return fz.view_as(fz)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor]:
        layer: Equilibrium = ctx.layer
        spec = layer.spec
        (z,) = ctx.saved_tensors
        h = z.clone().requires_grad_(True)
        with torch.enable_grad():
            fh = ctx.f(h)
        scale = grad.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (grad.dim() - 1)))
        target = grad / scale

        def adjoint_step(v: Tensor) -> Tensor:
            layer.counters.backward_evals += 1
            (vjp,) = torch.autograd.grad(fh, h, v, retain_graph=True)
            return vjp + target

        solver = get_solver(spec.b_solver)
        g, _, info = solver(
            adjoint_step,
            torch.zeros_like(grad),
            max_iter=spec.b_max_iter,
            tol=spec.b_tol,
            stop_mode=spec.b_stop_mode,
            lam=spec.anderson_lam,
        )
        residual = info["rel_lowest"] if spec.b_stop_mode == "rel" else info["abs_lowest"]
        layer.last_backward_converged = (residual <= spec.b_tol).detach()
        return None, None, g * scale


def regularisation(model: nn.Module) -> Tensor | None:
    """Sum of the weighted Jacobian penalties of the last training forward (None if none)."""
    terms = [layer.spec.jac_reg * layer.jac_loss for layer in equilibria(model) if layer.jac_loss is not None]
    for layer in equilibria(model):
        layer.jac_loss = None
    return torch.stack(terms).sum() if terms else None


def equilibria(model: nn.Module) -> list[Equilibrium]:
    """All equilibrium layers inside ``model`` (empty for explicit models)."""
    return [m for m in model.modules() if isinstance(m, Equilibrium)]


@contextmanager
def grad_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Set the gradient mode of every equilibrium layer in ``model`` inside the block."""
    with ExitStack() as stack:
        for layer in equilibria(model):
            stack.enter_context(layer.grad_mode(mode))
        yield
