"""LyaDEQ's residual construction (an ablation; the LyaDEQ family is :mod:`robustdeq.models.lyadeq`):
a DEQ whose dynamics are projected to decrease a convex Lyapunov function *of the residual*
z - f(z), then an orthogonal layer, on the shared :class:`~robustdeq.deq.Equilibrium` layer.
This was robustdeq's first reading of Chu, Wei, Liu, Zhao (arXiv 2304.12707); it is kept, under
the name of what it is, because it shows why the module must act on a state short of the
equilibrium: here the projection never moves the fixed point, so V cannot change the output.

**Dynamics.** The cell is the reference DEQ's, f(z, x) = relu(W z + U x) with W a
:class:`ContractiveConv` (operator norm <= ``bound`` < 1), viewed as the dynamical system
dz/dt = F(z) = f(z, x) - z, whose only equilibrium is the cell's unique fixed point z*(x).

**Lyapunov function.** V_x(z) = V0(r) with r = z - f(z, x) the residual and
V0(r) = s(g(r) - g(0)) + eps |r|^2, where g is an input-convex network (per-position
two-layer ICNN: non-negative hidden-to-hidden and output weights, softplus activations, which
are convex and non-decreasing) and s the smoothed ReLU of Manek & Kolter (2019). V0 is
convex with V0(0) = 0, and V0(r) >= eps |r|^2, so V_x >= eps (1 - bound)^2 |z - z*|^2 and
V_x(z) = 0 only at z = z*. V_x is convex in the residual coordinates r; it is *not* convex in
z (the map z -> r is a bi-Lipschitz bijection, not an affine one).

Why the minimum sits at the implicit fixed point: with the projection below and alpha > 0,
every equilibrium of the projected dynamics has V = 0 (F~ = 0 means F = c grad V with
c |grad V|^2 = ReLU(c |grad V|^2 + alpha V): either the ReLU is active and alpha V = 0, or
c = 0 and alpha V <= 0), so the only equilibrium is argmin V. A V minimised at a fixed
reference would send every input to that one point; one minimised at an explicit map of x
would make the "DEQ" that explicit map. Measuring V in residual coordinates puts its minimum
at the cell's own fixed point, which has no closed form. (The paper leaves this open; this
is our choice.)

**Projection and solve.** F~(z) = F(z) - grad V ReLU(grad V . F + alpha V) / |grad V|^2, with
grad V = (I - J_f)^T grad V0(r) in closed form. Along F~, dV/dt <= -alpha V exactly. The
solver iterates the Euler step G(z) = z + F~(z), which equals the plain cell f(z) wherever
the projection is inactive. The contraction alone gives dV/dt <= -2 (1 - bound) V for the
quadratic part of V (-V at bound 0.5); alpha = 1.5 asks for more, so the projection acts on
most solver steps (70-95% on trained digits models) rather than only where the ICNN part
bends V. The reference defenses iterate G by plain fixed-point iteration, so the solver
trajectory is the discretised projected flow. bound = 0.5 (the reference DEQ uses 0.9) keeps
grad V = (I - J_f)^T grad V0 well conditioned; at 0.9 the projected Euler steps overshoot and
V rises along the iteration.

**What is guaranteed, what is not.**

- Guaranteed: the equilibrium exists, is unique and is z*(x), the fixed point of the plain
  cell (contraction); the projection never moves it. Under the continuous flow of F~, V
  decays at least like exp(-alpha t) from every initial state.
- Not guaranteed: V decreasing along the *discrete* iteration (an Euler step can overshoot);
  it is observed on trained models (``tests/test_lyadeq.py``). An accelerated solver
  (Anderson) extrapolates and does not follow the flow at all.
- Consequence: the logits depend on x only through z*(x), which does not depend on V or
  alpha. The Lyapunov module therefore cannot by itself change accuracy or robustness: it
  shapes and certifies the path to the fixed point. Nor can V be learned from the task loss
  (dz*/d(theta_V) = 0): V's ICNN weights keep their initial values (they are parameters that
  receive no gradient). The correction
  term is detached in the solver map, which leaves the implicit gradient exact (z* is the
  fixed point of f alone) and keeps the adjoint solve on the contractive cell.

**Head.** pooled z* (C * 4 * 4 features) -> orthogonal fully connected layer Q (square,
kept orthogonal by ``torch.nn.utils.parametrizations.orthogonal``: Q Q^T = I by construction,
not by a penalty) -> ReLU -> linear classifier. ``orthogonal=False`` drops Q (the ablation):
the head is then the reference DEQ's (pool, linear).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdeq.deq import Equilibrium, SolverSpec
from robustdeq.models.blocks import ContractiveConv, stem_stride
from robustdeq.models.lyapunov import LyapunovFunction, OrthogonalHead
from robustdeq.models.registry import MODELS


class LyaDEQResidual(nn.Module):
    """x (B, C, H, W) in [0, 1] -> logits (B, classes); see the module docstring."""

    family = "lyadeq_residual"

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        solver: SolverSpec | None = None,
        channels: int = 16,
        bound: float = 0.5,
        alpha: float = 1.5,
        lyapunov_hidden: int = 8,
        lyapunov_eps: float = 0.1,
        lyapunov_scale: float = 1.0,
        orthogonal: bool = True,
    ) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError("alpha must be positive")
        c, h, w = in_shape
        s = stem_stride(h)
        self.inject = nn.Conv2d(c, channels, 3, stride=s, padding=1)
        self.state_shape = (channels, (h - 1) // s + 1, (w - 1) // s + 1)
        self.cell = ContractiveConv(channels, self.state_shape[1:], bound)
        self.lyapunov = LyapunovFunction(channels, lyapunov_hidden, lyapunov_eps, lyapunov_scale)
        self.alpha = alpha
        self.equilibrium = Equilibrium(solver)
        self.head = OrthogonalHead(channels, num_classes, orthogonal)
        self.last_state: Tensor | None = None
        self.last_projection_rate: float | None = None
        self._projected = 0
        self._evaluated = 0

    def f(self, z: Tensor, u: Tensor, weight: Tensor) -> Tensor:
        """The plain cell relu(W z + u), with W = ``weight``."""
        return torch.relu(self.cell(z, weight) + u)

    def lyapunov_value(self, z: Tensor, u: Tensor, weight: Tensor) -> Tensor:
        """V_x(z) (B,) for the injection ``u`` = U x."""
        return self.lyapunov(z - self.f(z, u, weight))

    def projected_drift(self, z: Tensor, u: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(f(z), correction), without gradient: F~(z) = f(z) - z - correction."""
        with torch.no_grad():
            pre = self.cell(z, weight) + u
            fz = torch.relu(pre)
            drift = fz - z
            v, grad_v0 = self.lyapunov.value_and_grad(-drift)
            # grad_z V = (I - J_f)^T grad V0, with J_f^T g = W^T (relu'(pre) * g).
            grad_v = grad_v0 - F.conv_transpose2d((pre > 0).to(z.dtype) * grad_v0, weight, padding=1)
            excess = torch.relu((grad_v * drift).flatten(1).sum(1) + self.alpha * v)
            coef = excess / grad_v.flatten(1).pow(2).sum(1).clamp_min(torch.finfo(z.dtype).tiny)
            self._projected += int((excess > 0).sum())
            self._evaluated += len(z)
            return fz, coef.view(-1, 1, 1, 1) * grad_v

    def step(self, z: Tensor, u: Tensor, weight: Tensor) -> Tensor:
        """The solver map G(z) = z + F~(z) = f(z) - correction; the correction is detached."""
        fz, correction = self.projected_drift(z, u, weight)
        if torch.is_grad_enabled():
            fz = self.f(z, u, weight)
        return fz - correction

    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        """Logits; the solve starts from ``z_init`` (a warm start) or zeros.

        The fixed point (detached) is left in :attr:`last_state`, the solver statistics in
        ``self.equilibrium.last_stats``, and the share of solver steps (over examples) at
        which the projection acted in :attr:`last_projection_rate`.
        """
        u = self.inject(x)
        weight = self.cell.effective_weight()
        z0 = x.new_zeros(x.shape[0], *self.state_shape) if z_init is None else z_init
        self._projected = self._evaluated = 0
        # ``inputs=u``: inside an attack session each example is solved on its own (per-example
        # Anderson from its warm start; the same unique fixed point).
        z = self.equilibrium(lambda z, u: self.step(z, u, weight), z0, inputs=u)
        self.last_projection_rate = self._projected / max(1, self._evaluated)
        self.last_state = z.detach()
        out: Tensor = self.head(z)
        return out


@MODELS.register("lyadeq_residual")
def make_lyadeq_residual(
    in_shape: tuple[int, int, int],
    num_classes: int,
    solver: SolverSpec | None = None,
    channels: int = 16,
    bound: float = 0.5,
    alpha: float = 1.5,
    lyapunov_hidden: int = 8,
    lyapunov_eps: float = 0.1,
    lyapunov_scale: float = 1.0,
    orthogonal: bool = True,
) -> nn.Module:
    return LyaDEQResidual(
        in_shape,
        num_classes,
        solver,
        channels=channels,
        bound=bound,
        alpha=alpha,
        lyapunov_hidden=lyapunov_hidden,
        lyapunov_eps=lyapunov_eps,
        lyapunov_scale=lyapunov_scale,
        orthogonal=orthogonal,
    )
