"""The equilibrium layer gives true input gradients in eval mode, in every gradient mode."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdeq.deq import Equilibrium, SolverSpec, grad_mode
from robustdeq.models import create_model

TIGHT = SolverSpec(
    f_solver="anderson", f_max_iter=200, f_tol=1e-12, f_stop_mode="abs",
    b_solver="anderson", b_max_iter=200, b_tol=1e-12, b_stop_mode="abs",
    phantom_steps=5, phantom_tau=0.5,
)  # fmt: skip


class TinyDEQ(nn.Module):
    """z* = tanh(W z* + U x) with |W| = 0.5: a contraction, so z* is unique."""

    def __init__(self, spec: SolverSpec) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        w = torch.randn(6, 6, generator=g, dtype=torch.float64)
        self.w = nn.Parameter(0.5 * w / torch.linalg.matrix_norm(w, 2))
        self.u = nn.Parameter(torch.randn(6, 4, generator=g, dtype=torch.float64))
        self.eq = Equilibrium(spec)

    def forward(self, x: Tensor) -> Tensor:
        inj = x @ self.u.T
        return self.eq(lambda z: torch.tanh(z @ self.w.T + inj), torch.zeros(x.shape[0], 6, dtype=x.dtype))


def loss_fn(model: nn.Module, x: Tensor) -> Tensor:
    return (model(x) ** 2).sum() + model(x)[:, 0].sum()


def input_grad(model: nn.Module, x: Tensor) -> Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model, x), x)
    return grad


def finite_difference(model: nn.Module, x: Tensor, h: float = 1e-6) -> Tensor:
    grad = torch.zeros_like(x)
    with torch.no_grad():
        for idx in range(x.numel()):
            e = torch.zeros_like(x).view(-1)
            e[idx] = h
            e = e.view_as(x)
            grad.view(-1)[idx] = (loss_fn(model, x + e) - loss_fn(model, x - e)) / (2 * h)
    return grad


def rel_err(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_ift_matches_unroll_and_finite_differences_in_eval_mode() -> None:
    model = TinyDEQ(TIGHT).eval()
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fd = finite_difference(model, x)
    ift = input_grad(model, x)
    with grad_mode(model, "unroll"):
        unroll = input_grad(model, x)
    assert rel_err(ift, fd) < 1e-3
    assert rel_err(unroll, fd) < 1e-3
    assert rel_err(ift, unroll) < 1e-6


def test_phantom_gradient_is_close_but_approximate() -> None:
    model = TinyDEQ(TIGHT).eval()
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    exact = input_grad(model, x)
    with grad_mode(model, "phantom"):
        phantom = input_grad(model, x)
    cosine = float(F.cosine_similarity(phantom.flatten(), exact.flatten(), dim=0))
    assert cosine > 0.9
    assert rel_err(phantom, exact) > 1e-6  # k damped steps only approximate (I - J)^-1


def test_training_and_attack_gradient_modes_are_independent() -> None:
    spec = SolverSpec(train_grad="phantom", attack_grad="ift")
    layer = Equilibrium(spec)
    assert layer.training and layer.active_grad_mode == "phantom"
    layer.eval()
    assert layer.active_grad_mode == "ift"
    with layer.grad_mode("unroll"):
        assert layer.active_grad_mode == "unroll"
    assert layer.active_grad_mode == "ift"


def test_deq_classifier_in_eval_mode_gives_nonzero_input_gradient_per_example() -> None:
    torch.manual_seed(0)
    model = create_model("deq", (1, 8, 8), 10, SolverSpec()).eval()
    x = torch.rand(8, 1, 8, 8, requires_grad=True)
    loss = F.cross_entropy(model(x), torch.arange(8))
    (grad,) = torch.autograd.grad(loss, x)
    assert bool((grad.flatten(1).abs().amax(1) > 0).all())
    stats = model.equilibrium.last_stats
    assert stats is not None and stats.nstep.shape == (8,) and bool(stats.converged.all())
    assert model.equilibrium.counters.backward_evals > 0


def test_backward_solve_converges_for_tiny_loss_gradients() -> None:
    """|dL/dz*| ~ 1e-6 (a confidently classified example) must not stall the adjoint solve."""
    torch.manual_seed(0)
    model = create_model("deq", (1, 8, 8), 10, SolverSpec()).eval()
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    (1e-6 * model(x).sum()).backward()
    converged = model.equilibrium.last_backward_converged
    assert converged is not None and bool(converged.all())


def test_warm_start_reaches_the_same_fixed_point_in_fewer_steps() -> None:
    torch.manual_seed(0)
    spec = SolverSpec(f_tol=1e-5)
    model = create_model("deq", (1, 8, 8), 10, spec).eval()
    x = torch.rand(16, 1, 8, 8)
    x_near = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    counters = model.equilibrium.counters
    with torch.no_grad():
        model(x)
        z_prev = model.last_state
        counters.reset()
        model(x_near)
        cold_state, cold_steps = model.last_state, counters.forward_evals
        counters.reset()
        model(x_near, z_init=z_prev)
        warm_state, warm_steps = model.last_state, counters.forward_evals
    assert warm_steps < cold_steps
    assert rel_err(warm_state, cold_state) < 1e-3
