"""The equilibrium layer gives true input gradients in eval mode, in every gradient mode."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdeq.data import load
from robustdeq.deq import Equilibrium, SolverSpec, grad_mode, regularisation
from robustdeq.models import create_model
from robustdeq.records.defense import DefenseSpec, ModelSpec, TrainSpec
from robustdeq.threat import ThreatModel
from robustdeq.training import train_model

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
    defense = DefenseSpec(
        id="deq", name="deq", model=ModelSpec("deq", {}), solver=SolverSpec(f_tol=1e-5),
        train=TrainSpec(epochs=2, lr=3e-3, train_subset=400),
    )  # fmt: skip
    model = train_model(defense, "digits", load("digits", "train"), ThreatModel("Linf", 0.2)).model.eval()
    x = load("digits", "test").x[:32]
    x_near = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
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


def test_per_example_solver_statistics() -> None:
    model = TinyDEQ(TIGHT.replace(f_tol=1e-8)).eval()
    with torch.no_grad():
        model(torch.randn(5, 4, dtype=torch.float64))
    stats = model.eq.last_stats
    assert stats is not None
    for tensor in (stats.nstep, stats.abs_residual, stats.rel_residual, stats.converged):
        assert tensor.shape == (5,)
    assert bool(stats.converged.all()) and float(stats.abs_residual.max()) < 1e-8
    assert stats.rel_trace.shape[0] == 5 and float(stats.rel_trace[:, -1].max()) < float(stats.rel_trace[:, 0].min())


def test_spectral_radius_estimate_respects_the_contraction() -> None:
    model = TinyDEQ(TIGHT).eval()
    with model.eq.measure_spectral_radius(), torch.no_grad():
        model(torch.randn(4, 4, dtype=torch.float64))
    stats = model.eq.last_stats
    assert stats is not None and stats.spectral_radius is not None
    # J = diag(tanh') W with |W| = 0.5 and 0 < tanh' <= 1.
    assert bool((stats.spectral_radius > 0).all()) and bool((stats.spectral_radius <= 0.5 + 1e-6).all())
    with torch.no_grad():
        model(torch.randn(4, 4, dtype=torch.float64))
    assert model.eq.last_stats is not None and model.eq.last_stats.spectral_radius is None


def test_jacobian_regularisation_enters_the_training_loss_only_when_asked() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8)
    plain = create_model("deq", (1, 8, 8), 10, SolverSpec()).train()
    plain(x).sum().backward()
    assert regularisation(plain) is None
    regular = create_model("deq", (1, 8, 8), 10, SolverSpec(jac_reg=2.0)).train()
    regular(x)
    penalty = regularisation(regular)
    assert penalty is not None and penalty.requires_grad and float(penalty.detach()) > 0
    penalty.backward()
    assert regular.cell.weight.grad is not None and float(regular.cell.weight.grad.abs().sum()) > 0
    assert regularisation(regular) is None  # consumed once
    regular.eval()
    regular(x)
    assert regularisation(regular) is None  # never in eval mode
