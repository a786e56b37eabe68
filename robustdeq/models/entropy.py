"""Input entropy reduction at inference (Yang, Li, Pang, Liu, ICML 2023, arXiv 2306.01435).

A defense folder turns it on with a table in its manifest (the defaults are the paper's code's,
``input-entropy-reduction/.../mdeq_core.py``, for eps 8/255: scale step and radius to the eps)::

    [model.entropy_reduction]
    rounds = 4          # rounds of (solver steps, then input steps)
    solver_steps = 2    # cell applications z <- f(z, x') per round, continuing from the current z
    input_steps = 10    # x' <- clip(x' - step_size * sign(grad_x' H), ball(x, radius), [0, 1]) per round
    step_size = 0.05    # the paper: 2/255 at eps 8/255, i.e. eps / 4
    radius = 0.2        # L-inf defense ball around the given input; the paper: the attack's eps
    readout = "early"   # or "equilibrium"

H is the entropy of softmax(head(f(z, x'))), the prediction one cell application past the
current state z. ``readout = "early"`` (the paper's reported accuracy: its 8th solver iterate)
predicts head(z) from the state the last round's solver steps reach (the last round's input
steps would read nothing, so they are skipped); ``"equilibrium"`` predicts head(z*(x')), z*
solved by the DEQ's own solver from the loop's state. The paper's solver steps are Broyden steps
that carry their low-rank memory across rounds; here they are plain cell applications
(fixed-point iteration, no memory to carry). Training is unchanged (the loop runs in eval mode
only).

This is an optimisation loop inside the forward pass, so it must be attacked adaptively
(METHODS.md section 2, Athalye et al. 2018). ``loop_gradient`` picks what an attack
differentiates:

- ``unroll``: autograd through the whole loop as written: the cell steps, the clipping to the
  ball and to [0, 1], and the final solve (with the DEQ's attack-time gradient). The sign step
  has derivative 0, so ``grad_x' H`` enters as a constant: this is the exact derivative of the
  loop, not an approximation.
- ``bpda``: the loop treated as the identity on the backward pass (BPDA, Athalye et al. 2018):
  the output is the looped model's, the gradient that of the readout at the purified input x'
  held fixed, passed to x unchanged (for the early readout: of the same number of plain cell
  steps at x'; for the equilibrium readout: of the DEQ at x').
- ``skip``: the gradient of the DEQ without the loop at x (the output is the looped model's,
  the gradient the plain DEQ's): the non-adaptive attack, kept in the worst case as a check on
  the two adaptive ones.

The evaluation runs the protocol's multi-mode attacks under each and counts the worst case;
entries get the flag ``test_time_optimisation``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import Tensor, nn

from robustdeq.errors import RobustdeqError
from robustdeq.records.parse import Settings, parse

# The first is what single-mode attacks (AutoAttack, Square, transfer) run under: BPDA, because
# the exact derivative of the loop is zero on every pixel the loop clips to [0, 1] (most of a
# digit's background), a shattered gradient in Athalye et al.'s sense; on deq-pgd-at-er, PGD
# under BPDA beat PGD through the unrolled loop by 3 to 11 points.
LOOP_GRADIENTS = ("bpda", "unroll", "skip")
# What the prediction reads: the state the loop's last solver steps left (the paper's code reports
# this early, unconverged state: the "last but one" of its nine states), or the equilibrium solved
# from there at the purified input.
READOUTS = ("early", "equilibrium")


class EntropySettings(Settings):
    """``[model.entropy_reduction]`` (see the module docstring)."""

    rounds: int = 4
    solver_steps: int = 2
    input_steps: int = 10
    step_size: float = 2 / 255
    radius: float = 8 / 255
    readout: Literal["early", "equilibrium"] = "early"

    @model_validator(mode="after")
    def _positive(self) -> EntropySettings:
        if min(self.rounds, self.solver_steps, self.input_steps) < 1 or self.step_size <= 0 or self.radius <= 0:
            raise ValueError("rounds, solver_steps, input_steps >= 1; step_size, radius > 0")
        return self


def entropy(logits: Tensor) -> Tensor:
    """Prediction entropy per example (B,), in nats."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


class EntropyReduced(nn.Module):
    """A DEQ classifier (:class:`robustdeq.models.deq.DEQClassifier`) with input entropy reduction
    in eval mode; x (B, C, H, W) in [0, 1] -> logits (B, classes)."""

    # The evaluation attacks it once per loop gradient (see the module docstring).
    loop_gradients = LOOP_GRADIENTS
    base: Any  # a DEQClassifier (duck-typed: inject, cell, f, head, state_shape, equilibrium)

    def __init__(self, base: nn.Module, settings: EntropySettings) -> None:
        super().__init__()
        for name in ("inject", "cell", "f", "head", "state_shape", "equilibrium"):
            if not hasattr(base, name):
                raise RobustdeqError(f"entropy_reduction needs a DEQ classifier (family deq); it lacks {name!r}")
        self.base = base
        self.settings = settings
        self.loop_gradient = LOOP_GRADIENTS[0]

    @property
    def readout_budget(self) -> int | None:
        """With the early readout, the rounds of the loop the head's state comes from (the ``[checks]``
        re-run doubles them); None with the equilibrium readout, where the solver decides."""
        return self.settings.rounds if self.settings.readout == "early" else None

    @readout_budget.setter
    def readout_budget(self, rounds: int) -> None:
        self.settings = self.settings.model_copy(update={"rounds": rounds})

    @property
    def twin_depth(self) -> int | None:
        """The early readout's state comes from rounds x solver_steps plain cell steps: the transfer
        twin's depth (None with the equilibrium readout: the runner measures the solver's steps)."""
        return self.settings.rounds * self.settings.solver_steps if self.settings.readout == "early" else None

    def explicit_twin(self, depth: int) -> nn.Module:
        """The base DEQ's explicit twin, without the loop: a transfer source."""
        return self.base.explicit_twin(depth)

    @contextmanager
    def loop_gradient_mode(self, mode: str) -> Iterator[None]:
        if mode not in LOOP_GRADIENTS:
            raise RobustdeqError(f"unknown loop gradient {mode!r} (known: {', '.join(LOOP_GRADIENTS)})")
        previous, self.loop_gradient = self.loop_gradient, mode
        try:
            yield
        finally:
            self.loop_gradient = previous

    def _count(self, rows: int, evals: int = 1) -> None:
        counters = self.base.equilibrium.counters
        counters.forward_evals += evals
        counters.forward_example_evals += evals * rows

    def _entropy_gradient(self, z: Tensor, xp: Tensor, weight: Tensor) -> Tensor:
        """grad_x' of the summed entropy of head(f(z, x')) at fixed z (a constant for the caller)."""
        b = self.base
        with torch.enable_grad():
            xp = xp.detach().requires_grad_(True)
            logits = b.head(b.f(z.detach(), b.inject(xp), weight.detach()))
            (grad,) = torch.autograd.grad(entropy(logits).sum(), xp)
        self._count(len(xp))
        return grad

    def purify(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(x', z): the input after the loop and the state it left; differentiable in ``x`` when
        autograd is on (the ``unroll`` path). With the early readout the last round's input steps
        are skipped: nothing reads them."""
        b = self.base
        s = self.settings
        weight = b.cell.effective_weight()
        low, high = (x - s.radius).clamp(0.0, 1.0), (x + s.radius).clamp(0.0, 1.0)
        xp = x
        z = x.new_zeros(x.shape[0], *b.state_shape)
        for r in range(s.rounds):
            u = b.inject(xp)
            for _ in range(s.solver_steps):
                z = b.f(z, u, weight)
            self._count(len(x), s.solver_steps)
            if s.readout == "early" and r == s.rounds - 1:
                break
            for _ in range(s.input_steps):
                step = s.step_size * torch.sign(self._entropy_gradient(z, xp, weight))
                xp = torch.minimum(torch.maximum(xp - step, low), high)
        return xp, z

    def _read(self, xp: Tensor, z: Tensor) -> Tensor:
        """The prediction from the loop's result: head(z) (early), or head(z*(x')) solved from z."""
        out: Tensor = self.base.head(z) if self.settings.readout == "early" else self.base(xp, z_init=z)
        return out

    def _plain_steps(self, x: Tensor) -> Tensor:
        """head of the state after as many plain cell steps at a fixed input as the loop takes."""
        b = self.base
        weight, u = b.cell.effective_weight(), b.inject(x)
        z = x.new_zeros(x.shape[0], *b.state_shape)
        for _ in range(self.settings.rounds * self.settings.solver_steps):
            z = b.f(z, u, weight)
        out: Tensor = b.head(z)
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self.base(x)
        if self.loop_gradient == "skip":
            with torch.no_grad():
                looped = self._read(*self.purify(x))
            plain = self.base(x)
            return plain + (looped - plain).detach()
        if self.loop_gradient == "bpda":
            with torch.no_grad():
                xp, z = self.purify(x)
                looped = self._read(xp, z)
            held = x + (xp - x).detach()  # the loop as the identity on the backward pass
            if self.settings.readout == "equilibrium":
                return self.base(held, z_init=z)
            surrogate = self._plain_steps(held)  # the early state's dependence on its (fixed) input
            return surrogate + (looped - surrogate).detach()
        return self._read(*self.purify(x))


def wrap(model: nn.Module, table: dict[str, Any], where: str) -> EntropyReduced:
    """``model`` with entropy reduction configured by the manifest's ``[model.entropy_reduction]``."""
    return EntropyReduced(model, parse(EntropySettings, table, f"{where} [model.entropy_reduction]"))
