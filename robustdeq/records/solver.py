"""The solver record of a DEQ: forward/backward solver settings and gradient modes (``[solver]``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from robustdeq.records.parse import Record

SOLVERS = ("anderson", "broyden", "fixed_point_iter")
GRAD_MODES = ("ift", "phantom", "unroll")
# Attack-only gradient modes (Yang, Pang and Liu, NeurIPS 2022, arXiv 2306.01429): from the forward
# solver's i-th state, ``phantom_steps`` damped steps z <- (1 - tau) z + tau f(z), differentiated
# through; ``state-<i>`` for one state, ``states`` for the mean over the states INTERMEDIATE_STATES.
INTERMEDIATE_STATES = (3, 5, 9, 17, 33)
STOP_MODES = ("abs", "rel")

Solver = Literal["anderson", "broyden", "fixed_point_iter"]
GradMode = Literal["ift", "phantom", "unroll"]
StopMode = Literal["abs", "rel"]


def is_attack_mode(mode: str) -> bool:
    """A gradient mode an attack may use: the three of :data:`GRAD_MODES`, ``states`` or ``state-<i>``."""
    if mode in GRAD_MODES or mode == "states":
        return True
    head, _, index = mode.partition("-")
    return head == "state" and index.isdigit() and int(index) >= 1


ATTACK_MODES_HELP = ", ".join((*GRAD_MODES, "states", "state-<i>"))


class SolverSpec(Record):
    """Forward/backward solver settings (torchdeq's ``f_*`` / ``b_*`` naming) and gradient modes.

    ``anderson_lam`` is Anderson's Tikhonov regulariser; torchdeq's default 1e-4 is absolute
    and stalls the solve once residuals are small (about 1e-2 of the state), so we use 1e-8.
    ``jac_reg`` is the weight of torchdeq's Jacobian penalty |J_f(z*)|_F^2 (Hutchinson
    estimate, Bai et al., ICML 2021, arXiv 2106.14342) added to the training loss; 0 disables it.
    """

    f_solver: Solver = "anderson"
    f_max_iter: int = 40
    f_tol: float = 1e-3
    f_stop_mode: StopMode = "rel"
    b_solver: Solver = "anderson"
    b_max_iter: int = 40
    b_tol: float = 1e-3
    b_stop_mode: StopMode = "rel"
    train_grad: GradMode = "ift"
    attack_grad: GradMode = "ift"
    phantom_steps: int = 5
    phantom_tau: float = 0.5
    anderson_lam: float = 1e-8
    jac_reg: float = 0.0

    @model_validator(mode="after")
    def _ranges(self) -> SolverSpec:
        if self.f_max_iter < 1 or self.b_max_iter < 1 or self.phantom_steps < 1:
            raise ValueError("f_max_iter, b_max_iter and phantom_steps must be >= 1")
        if not 0.0 < self.phantom_tau <= 1.0:
            raise ValueError("phantom_tau must be in (0, 1]")
        if self.jac_reg < 0:
            raise ValueError("jac_reg must be >= 0")
        if self.f_tol <= 0 or self.b_tol <= 0:
            raise ValueError("f_tol and b_tol must be positive")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self, **changes: Any) -> SolverSpec:
        """A copy with ``changes`` (validated)."""
        return SolverSpec.model_validate({**self.model_dump(), **changes})
