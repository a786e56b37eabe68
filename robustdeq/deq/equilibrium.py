"""The equilibrium layer every DEQ model in robustdeq shares (the only code that talks to torchdeq).

Given a cell ``f`` (a closure over the input x), :class:`Equilibrium` finds z* = f(z*) with a
torchdeq solver (fixed-point iteration, Anderson or Broyden) from ``z0`` (zeros or a warm
start) and attaches gradients in one of three ways:

- ``ift``: exact implicit differentiation (Bai, Kolter, Koltun, NeurIPS 2019, arXiv 1909.01377):
  the backward pass solves g = J_f(z*)^T g + dL/dz* with the backward solver (``b_*``
  settings), normalised per example (see :class:`_ImplicitGrad`).
- ``phantom``: ``phantom_steps`` damped steps z <- (1 - tau) z + tau f(z) on top of z*,
  differentiated through (Geng et al., NeurIPS 2021, arXiv 2111.05177). Approximate.
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

Warm starts for attacks: inside :meth:`Equilibrium.attack_session` (opened by
:class:`robustdeq.evaluation.view.AttackView` around each forward of an attack), the forward
solve and the IFT adjoint solve use :func:`robustdeq.deq.anderson.anderson`, which stops each
example at its own tolerance, the adjoint starts from the session's ``g0``, and the solved
adjoint is handed back to the session's ``on_adjoint``. Per-example stopping needs a cell that
can be evaluated on a subset of the batch: the model passes its per-example input (e.g. the
injection U x) as ``inputs`` and a cell ``f(z, inputs)``. Outside a session nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchdeq.loss import jac_reg, power_method
from torchdeq.solver import get_solver

from robustdeq.deq.rowwise import fixed_point
from robustdeq.errors import RobustdeqError
from robustdeq.records.solver import ATTACK_MODES_HELP, INTERMEDIATE_STATES, SolverSpec, is_attack_mode


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
    backward_example_evals: int = 0

    def reset(self) -> None:
        self.forward_calls = self.forward_evals = self.forward_example_evals = 0
        self.backward_evals = self.backward_example_evals = 0


@dataclass
class AttackSession:
    """Warm starts for the next forward(s): ``g0`` initialises the IFT adjoint solve (per example,
    normalised as in :class:`_ImplicitGrad`; zeros = cold), ``on_adjoint`` receives the solved one."""

    g0: Tensor | None = None
    on_adjoint: Callable[[Tensor], None] | None = None


Cell = Callable[..., Tensor]
# (z, inputs) -> (v -> J_f(z)^T v) for those rows: the cell's transposed Jacobian without autograd,
# which a model may give the layer to make its implicit backward solves cheaper.
Linearize = Callable[[Tensor, Tensor], Callable[[Tensor], Tensor]]


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
        self._session: AttackSession | None = None
        self._budget: Callable[[], int] | None = None
        self._budget_in_eval = False
        self._adjoint_start: Tensor | None = None
        self.last_budget: int | None = None  # the cap the last forward drew (inside :meth:`budget`)

    @contextmanager
    def grad_mode(self, mode: str) -> Iterator[None]:
        """Use gradient ``mode`` for every forward inside the block, in train and eval mode."""
        if not is_attack_mode(mode):
            raise RobustdeqError(f"unknown gradient mode {mode!r} (known: {ATTACK_MODES_HELP})")
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

    @contextmanager
    def attack_session(self, session: AttackSession) -> Iterator[None]:
        """Forwards inside the block solve per example and warm-start the adjoint (module docstring)."""
        previous, self._session = self._session, session
        try:
            yield
        finally:
            self._session = previous

    @contextmanager
    def budget(self, draw: Callable[[], int], eval_too: bool = False) -> Iterator[None]:
        """Inside the block every training-mode forward (and every eval-mode one with ``eval_too``)
        stops its solver after at most ``draw()`` cell evaluations, drawn anew for each forward
        (random intermediate states, Yang et al. 2023). A cap below 3 runs plain fixed-point
        iteration: torchdeq's Anderson evaluates the cell twice before its first mixing step and,
        with ``max_iter`` <= 2, returns its initial guess."""
        previous = self._budget, self._budget_in_eval
        self._budget, self._budget_in_eval = draw, eval_too
        try:
            yield
        finally:
            self._budget, self._budget_in_eval = previous

    @property
    def sampling(self) -> bool:
        """Whether forwards in the current mode draw a random solver budget (:meth:`budget`)."""
        return self._budget is not None and (self.training or self._budget_in_eval)

    @contextmanager
    def adjoint_start(self, g0: Tensor) -> Iterator[None]:
        """Backward passes of forwards made inside the block start their IFT adjoint solve from
        ``g0`` (B, ...), in the per-example normalised units of :class:`_ImplicitGrad` (JIIO's
        warm-started adjoint), instead of from zeros."""
        previous, self._adjoint_start = self._adjoint_start, g0
        try:
            yield
        finally:
            self._adjoint_start = previous

    def _forward_spec(self) -> SolverSpec:
        """The settings of the forward about to run (draws its budget when :attr:`sampling`)."""
        if not self.sampling:
            return self.spec
        assert self._budget is not None
        cap = min(self.spec.f_max_iter, max(1, int(self._budget())))
        self.last_budget = cap
        solver = "fixed_point_iter" if self.spec.f_solver == "anderson" and cap < 3 else self.spec.f_solver
        return self.spec.replace(f_max_iter=cap, f_solver=solver)

    @property
    def active_grad_mode(self) -> str:
        if self._override is not None:
            return self._override
        return self.spec.train_grad if self.training else self.spec.attack_grad

    def forward(
        self,
        f: Cell,
        z0: Tensor,
        inputs: Tensor | None = None,
        z_star: Tensor | None = None,
        linearize: Linearize | None = None,
    ) -> Tensor:
        """Fixed point of ``f`` from ``z0`` (B, ...); differentiable when autograd is on.

        ``f(z)``, or ``f(z, inputs)`` when the per-example ``inputs`` (B, ...) are given, which
        lets an attack session evaluate the cell on a subset of the rows. ``z_star``: a fixed point
        the caller has already solved for (and whose :attr:`last_stats` it has set): only the
        gradient is attached (:mod:`robustdeq.deq.torchdeq_adapter` does this). ``linearize``
        (with ``inputs``): the cell's transposed Jacobian in closed form, used by the IFT adjoint
        solves instead of a vector-Jacobian product through autograd at every step.
        """
        spec = self._forward_spec()
        cell: Callable[[Tensor], Tensor] = f if inputs is None else (lambda z: f(z, inputs))

        def counted(z: Tensor) -> Tensor:
            self.counters.forward_evals += 1
            self.counters.forward_example_evals += z.shape[0]
            return cell(z)

        session = self._session if inputs is not None and not self.sampling else None
        with torch.no_grad():
            if z_star is not None:
                z_star = z_star.detach()
            elif session is not None and inputs is not None:
                z_star = self._solve_per_example(f, z0, inputs)
            else:
                z_star = self._solve_batch(counted, z0, spec)
        self.counters.forward_calls += 1
        if self._measure_sradius and self.last_stats is not None:
            self.last_stats.spectral_radius = self._spectral_radius(cell, z_star)
        if self.training and spec.jac_reg > 0 and torch.is_grad_enabled():
            z = z_star.detach().requires_grad_(True)
            self.jac_loss = jac_reg(counted(z), z, vecs=1, create_graph=True)
        if not torch.is_grad_enabled():
            return z_star

        mode = self.active_grad_mode
        if mode.startswith("state"):
            return self._from_intermediate_states(counted, torch.zeros_like(z0), mode)
        if mode == "ift":
            lin = linearize if inputs is not None else None
            return _ImplicitGrad.apply(self, counted, f, inputs, session, lin, counted(z_star.detach()))
        if mode == "phantom":
            tau = spec.phantom_tau
            z = z_star
            for _ in range(spec.phantom_steps):
                z = (1.0 - tau) * z + tau * counted(z)
            return z
        z = z0 if session is None else torch.zeros_like(z0)  # unrolling is always from a cold start
        for _ in range(spec.f_max_iter):
            z = counted(z)
        return z

    def _solve_batch(self, f: Callable[[Tensor], Tensor], z0: Tensor, spec: SolverSpec) -> Tensor:
        solver = get_solver(spec.f_solver)
        z_star, _, info = solver(
            f, z0.detach(), max_iter=spec.f_max_iter, tol=spec.f_tol, stop_mode=spec.f_stop_mode, lam=spec.anderson_lam
        )
        residual = info["rel_lowest"] if spec.f_stop_mode == "rel" else info["abs_lowest"]
        self.last_stats = SolverStats(
            nstep=info["nstep"].detach().to(torch.int64),
            abs_residual=info["abs_lowest"].detach(),
            rel_residual=info["rel_lowest"].detach(),
            converged=(residual <= spec.f_tol).detach(),
            rel_trace=info["rel_trace"].detach(),
        )
        return z_star

    def _solve_per_example(self, f: Cell, z0: Tensor, inputs: Tensor) -> Tensor:
        spec = self.spec

        subset: dict[str, Tensor] = {"rows": torch.arange(len(inputs), device=inputs.device), "inputs": inputs}

        def rows_f(z: Tensor, rows: Tensor) -> Tensor:
            self.counters.forward_evals += 1
            self.counters.forward_example_evals += len(rows)
            if len(rows) != len(subset["rows"]):  # the solver dropped finished rows: index once per change
                subset["rows"], subset["inputs"] = rows, inputs[rows]
            return f(z, subset["inputs"])

        result = fixed_point(rows_f, z0, spec.f_max_iter, spec.f_tol, spec.f_stop_mode)
        residual = result.rel_residual if spec.f_stop_mode == "rel" else result.abs_residual
        self.last_stats = SolverStats(
            nstep=result.nstep,
            abs_residual=result.abs_residual,
            rel_residual=result.rel_residual,
            converged=residual <= spec.f_tol,
            rel_trace=result.trace,
        )
        return result.z

    def _from_intermediate_states(self, f: Callable[[Tensor], Tensor], z0: Tensor, mode: str) -> Tensor:
        """Mean over the chosen solver states z_i (a cold solve; a state past the solver's stop is
        its final state) of ``phantom_steps`` damped steps from z_i, differentiated through."""
        spec = self.spec
        wanted: tuple[int, ...] = INTERMEDIATE_STATES if mode == "states" else (int(mode.partition("-")[2]),)
        picks = tuple(i for i in wanted if i <= spec.f_max_iter) or (spec.f_max_iter,)
        with torch.no_grad():
            final, states, _ = get_solver(spec.f_solver)(
                f,
                z0,
                max_iter=spec.f_max_iter,
                tol=spec.f_tol,
                stop_mode=spec.f_stop_mode,
                lam=spec.anderson_lam,
                indexing=list(picks),
            )
        states = [*states, *[final] * (len(picks) - len(states))][: len(picks)]
        outs = []
        for state in states:
            z = state.detach()
            for _ in range(spec.phantom_steps):
                z = (1.0 - spec.phantom_tau) * z + spec.phantom_tau * f(z)
            outs.append(z)
        return torch.stack(outs).mean(0)

    @staticmethod
    def _spectral_radius(f: Callable[[Tensor], Tensor], z_star: Tensor) -> Tensor:
        devices = [z_star.device] if z_star.is_cuda else []  # the RNGs the power method draws from
        with torch.enable_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            z = z_star.detach().requires_grad_(True)
            _, radius = power_method(f(z), z, n_iters=50)
        return radius.detach()


class _ImplicitGrad(torch.autograd.Function):
    """Identity on f(z*) whose backward solves g = J_f(z*)^T g + grad (the IFT adjoint).

    The adjoint system is linear in ``grad``, so it is solved for grad / |grad| per example
    and rescaled. Without this, Anderson's absolute regulariser (lam = 1e-4) swamps the
    tiny residuals of confidently classified examples (|dL/dz*| ~ 1e-6) and the backward
    solve stalls at a 1% relative residual: the gradient an attacker gets would be wrong.
    Inside an attack session the normalised adjoint is solved per example from the
    session's ``g0`` and handed to its ``on_adjoint``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        layer: Equilibrium,
        f: Callable[[Tensor], Tensor],
        cell: Cell,
        inputs: Tensor | None,
        session: AttackSession | None,
        linearize: Linearize | None,
        fz: Tensor,
    ) -> Tensor:
        ctx.layer, ctx.f, ctx.cell, ctx.session, ctx.linearize = layer, f, cell, session, linearize
        ctx.inputs = None if inputs is None else inputs.detach()
        ctx.start = layer._adjoint_start
        ctx.save_for_backward(fz.detach())
        return fz.view_as(fz)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, None, None, None, None, Tensor]:
        layer: Equilibrium = ctx.layer
        (z,) = ctx.saved_tensors
        scale = grad.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (grad.dim() - 1)))
        target = grad / scale
        session: AttackSession | None = ctx.session
        linear = ctx.linearize
        if session is None:
            apply = linear(z, ctx.inputs) if linear is not None else None
            g, converged = _adjoint_batch(layer, ctx.f, z, target, ctx.start, apply)
        else:
            g, converged = _adjoint_per_example(layer, ctx.cell, ctx.inputs, z, target, session.g0, linear)
            if session.on_adjoint is not None:
                session.on_adjoint(g.detach())
        layer.last_backward_converged = converged
        return None, None, None, None, None, None, g * scale


def _adjoint_batch(
    layer: Equilibrium,
    f: Callable[[Tensor], Tensor],
    z: Tensor,
    target: Tensor,
    start: Tensor | None = None,
    transposed: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Solve g = J_f(z)^T g + target with the backward torchdeq solver, from ``start`` or zeros;
    ``transposed`` applies J_f(z)^T in closed form (else a vector-Jacobian product per step)."""
    spec = layer.spec
    if transposed is None:
        h = z.clone().requires_grad_(True)
        with torch.enable_grad():
            fh = f(h)

    def adjoint_step(v: Tensor) -> Tensor:
        layer.counters.backward_evals += 1
        layer.counters.backward_example_evals += v.shape[0]
        if transposed is not None:
            return transposed(v) + target
        (vjp,) = torch.autograd.grad(fh, h, v, retain_graph=True)
        return vjp + target

    solver = get_solver(spec.b_solver)
    g, _, info = solver(
        adjoint_step,
        torch.zeros_like(target) if start is None else start.detach().reshape_as(target),
        max_iter=spec.b_max_iter,
        tol=spec.b_tol,
        stop_mode=spec.b_stop_mode,
        lam=spec.anderson_lam,
    )
    residual = info["rel_lowest"] if spec.b_stop_mode == "rel" else info["abs_lowest"]
    return g, (residual <= spec.b_tol).detach()


def _adjoint_per_example(
    layer: Equilibrium,
    cell: Cell,
    inputs: Tensor,
    z: Tensor,
    target: Tensor,
    g0: Tensor | None,
    linearize: Linearize | None = None,
) -> tuple[Tensor, Tensor]:
    """The adjoint solve with per-example stopping from ``g0``, by fixed-point iteration (the cell's
    Jacobian is a contraction, so is its transpose).

    With ``linearize`` J_f^T is applied in closed form on the active rows. Else the vector-Jacobian
    products need a graph of f at z* over the active rows; it is rebuilt on the active rows (one
    more cell evaluation) whenever they have shrunk to half of the rows the current graph covers,
    else the products run on the graph's rows with zeros for stopped ones.
    """
    spec = layer.spec
    graph: dict[str, Tensor] = {}
    closed: dict[str, Any] = {}

    def closed_step(v: Tensor, rows: Tensor) -> Tensor:
        assert linearize is not None
        if closed.get("rows") is None or len(closed["rows"]) != len(rows):  # the solver dropped finished rows
            closed.update(rows=rows, apply=linearize(z[rows], inputs[rows]), target=target[rows])
        layer.counters.backward_evals += 1
        layer.counters.backward_example_evals += len(rows)
        return closed["apply"](v) + closed["target"]

    def build(rows: Tensor) -> None:
        h = z[rows].clone().requires_grad_(True)
        with torch.enable_grad():
            graph["fh"] = cell(h, inputs[rows])
        graph["h"], graph["rows"] = h, rows
        position = torch.full((len(z),), -1, dtype=torch.long, device=z.device)
        position[rows] = torch.arange(len(rows), device=z.device)
        graph["position"] = position

    def adjoint_step(v: Tensor, rows: Tensor) -> Tensor:
        if not graph or 2 * len(rows) <= len(graph["rows"]):
            build(rows)
        covered = len(graph["rows"])
        layer.counters.backward_evals += 1
        layer.counters.backward_example_evals += covered
        if covered == len(rows):
            padded = v
        else:
            padded = v.new_zeros(covered, *v.shape[1:])
            padded[graph["position"][rows]] = v
        (vjp,) = torch.autograd.grad(graph["fh"], graph["h"], padded, retain_graph=True)
        if covered != len(rows):
            vjp = vjp[graph["position"][rows]]
        return vjp + target[rows]

    # Rows with a zero output gradient (e.g. held by an attack view) have the adjoint 0.
    live = target.flatten(1).abs().amax(1) > 0
    g = torch.zeros_like(target)
    converged = torch.ones(len(target), dtype=torch.bool, device=target.device)
    if not bool(live.any()):
        return g, converged
    if not bool(live.all()):
        z, inputs, target = z[live], inputs[live], target[live]
        g0 = None if g0 is None else g0[live]
    start = torch.zeros_like(target) if g0 is None else g0
    step = closed_step if linearize is not None else adjoint_step
    result = fixed_point(step, start, spec.b_max_iter, spec.b_tol, spec.b_stop_mode)
    residual = result.rel_residual if spec.b_stop_mode == "rel" else result.abs_residual
    g[live], converged[live] = result.z, residual <= spec.b_tol
    return g, converged


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
def solver_budget(model: nn.Module, factor: int = 1, cap: int | None = None) -> Iterator[None]:
    """Multiply every equilibrium layer's forward and backward iteration caps by ``factor`` (then
    limit them to ``cap`` if given) inside the block."""
    layers = equilibria(model)
    saved = [layer.spec for layer in layers]
    for layer in layers:
        spec = layer.spec
        f_max, b_max = spec.f_max_iter * factor, spec.b_max_iter * factor
        if cap is not None:
            f_max, b_max = min(f_max, cap), min(b_max, cap)
        layer.spec = spec.replace(f_max_iter=f_max, b_max_iter=b_max)
    try:
        yield
    finally:
        for layer, spec in zip(layers, saved, strict=True):
            layer.spec = spec


@contextmanager
def grad_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Set the gradient mode of every equilibrium layer in ``model`` inside the block."""
    with ExitStack() as stack:
        for layer in equilibria(model):
            stack.enter_context(layer.grad_mode(mode))
        yield
