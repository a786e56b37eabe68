"""LyaDEQ (Chu et al. 2023): the convex Lyapunov function, the projected dynamics, stability of
the fixed point along the solver trajectory, and the orthogonal layer."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from robustdeq.data import load
from robustdeq.deq import SolverSpec
from robustdeq.models import create_model
from robustdeq.models.lyadeq import LyaDEQClassifier
from robustdeq.specs import DefenseSpec, ModelSpec, TrainSpec
from robustdeq.threat import ThreatModel
from robustdeq.training import train_model

# The reference defenses' solver (plain fixed-point iteration of the projected step), tighter.
SOLVER = SolverSpec(f_solver="fixed_point_iter", f_max_iter=60, f_tol=1e-6)


def make(**settings: object) -> LyaDEQClassifier:
    torch.manual_seed(0)
    model = create_model("lyadeq", (1, 8, 8), 10, SOLVER, **settings)  # type: ignore[arg-type]
    assert isinstance(model, LyaDEQClassifier)
    return model


@pytest.fixture(scope="module")
def trained() -> LyaDEQClassifier:
    """A LyaDEQ trained for 3 epochs on clean digits, with the reference defenses' settings."""
    solver = dataclasses.replace(SOLVER, f_max_iter=30, f_tol=1e-3)
    defense = DefenseSpec(
        id="lyadeq", name="lyadeq", model=ModelSpec("lyadeq", {}), solver=solver,
        train=TrainSpec(epochs=3, lr=3e-3),
    )  # fmt: skip
    model = train_model(defense, "digits", load("digits", "train"), ThreatModel("Linf", 0.2)).model
    assert isinstance(model, LyaDEQClassifier)
    model.equilibrium.spec = SOLVER
    return model.eval()


@pytest.fixture(scope="module")
def digits() -> Tensor:
    return load("digits", "test").x[:64]


def second_differences(values: Tensor) -> Tensor:
    return values[:-2] - 2 * values[1:-1] + values[2:]


def test_lyapunov_function_is_nonnegative_and_convex_along_random_segments() -> None:
    lyapunov = make().lyapunov
    icnn = lyapunov.icnn
    assert bool((icnn.w_hidden >= 0).all()) and bool((icnn.w_out >= 0).all())
    g = torch.Generator().manual_seed(0)
    ends = 3 * torch.randn(2, 64, 16, 8, 8, generator=g)
    segments = [(1 - t) * ends[0] + t * ends[1] for t in torch.linspace(0, 1, 11)]
    v = torch.stack([lyapunov(r) for r in segments])  # (11, 64)
    assert bool((v >= 0).all())
    assert float(second_differences(v).min()) >= -1e-5 * float(v.max())
    assert float(lyapunov(torch.zeros(1, 16, 8, 8))) == 0.0
    assert bool((v >= 0.999 * lyapunov.eps * torch.stack([r.flatten(1).pow(2).sum(1) for r in segments])).all())
    # The quadratic term alone would be convex: check the network g by itself, and that the check
    # has teeth (with negative output weights g is concave).
    gv = torch.stack([icnn(r) for r in segments])
    assert float(second_differences(gv).min()) >= -1e-5 * float(gv.abs().max())
    icnn.w_out.neg_()
    gv = torch.stack([icnn(r) for r in segments])
    assert float(second_differences(gv).min()) < -1e-3 * float(gv.abs().max())


def test_closed_form_gradient_of_v_matches_autograd() -> None:
    lyapunov = make().lyapunov.double()
    r = torch.randn(4, 16, 8, 8, dtype=torch.float64, requires_grad=True)
    value, grad = lyapunov.value_and_grad(r.detach())
    (expected,) = torch.autograd.grad(lyapunov(r).sum(), r)
    assert torch.allclose(value, lyapunov(r.detach()))
    assert torch.allclose(grad, expected, rtol=1e-10, atol=1e-12)


def test_projected_dynamics_decrease_v_at_rate_alpha(trained: LyaDEQClassifier, digits: Tensor) -> None:
    model = trained
    u, weight = model.inject(digits).detach(), model.cell.effective_weight().detach()
    g = torch.Generator().manual_seed(0)
    z = torch.cat([s * torch.randn(len(digits), *model.state_shape, generator=g) for s in (0.1, 1.0, 5.0)])
    u = u.repeat(3, 1, 1, 1)
    z.requires_grad_(True)
    v = model.lyapunov_value(z, u, weight)
    (grad_v,) = torch.autograd.grad(v.sum(), z)  # by autograd, independently of the model's formula
    v = v.detach()
    fz, correction = model.projected_drift(z.detach(), u, weight)
    plain = (grad_v * (fz - z)).flatten(1).sum(1)
    projected = (grad_v * (fz - z - correction)).flatten(1).sum(1)
    assert bool((v > 0).all())
    assert bool((plain > -model.alpha * v).any())  # the cell alone is too slow somewhere ...
    assert bool((projected <= -model.alpha * v + 1e-4 * v).all())  # ... the projection fixes it


def solver_trajectory(
    model: LyaDEQClassifier, x: Tensor, monkeypatch: pytest.MonkeyPatch, z_init: Tensor | None = None
) -> Tensor:
    """V at every state the solver visits, (B, steps), from a forward of ``model``."""
    states: list[Tensor] = []
    step = model.step

    def recording(z: Tensor, u: Tensor, weight: Tensor) -> Tensor:
        states.append(z.clone())
        return step(z, u, weight)

    monkeypatch.setattr(model, "step", recording)
    with torch.no_grad():
        model(x, z_init=z_init)
    u, weight = model.inject(x).detach(), model.cell.effective_weight().detach()
    return torch.stack([model.lyapunov_value(z, u, weight).detach() for z in states], 1)


@pytest.mark.parametrize("start", ["zeros", "random"])
def test_v_decreases_monotonically_along_the_solver_trajectory(
    trained: LyaDEQClassifier, digits: Tensor, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    model = trained
    g = torch.Generator().manual_seed(1)
    z_init = None if start == "zeros" else 5 * torch.randn(len(digits), *model.state_shape, generator=g)
    v = solver_trajectory(model, digits, monkeypatch, z_init)
    stats = model.equilibrium.last_stats
    assert stats is not None and bool(stats.converged.all())
    assert v.shape[1] >= 10
    assert model.last_projection_rate is not None and model.last_projection_rate > 0.3  # the projection acts
    # Strictly decreasing until V reaches float32 round-off of its starting value.
    live = v[:, :-1] > 1e-9 * v[:, :1]
    assert bool(live[:, :5].all())
    assert bool((v[:, 1:] < v[:, :-1])[live].all())


def test_perturbed_initial_state_converges_back_to_the_same_fixed_point(
    trained: LyaDEQClassifier, digits: Tensor
) -> None:
    model = trained
    with torch.no_grad():
        logits = model(digits)
    z_star = model.last_state
    assert z_star is not None
    scale = z_star.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    g = torch.Generator().manual_seed(2)
    for z_init in (
        z_star + 0.3 * scale * F.normalize(torch.randn(z_star.shape, generator=g).flatten(1)).view_as(z_star),
        10 * torch.randn(z_star.shape, generator=g),
    ):
        with torch.no_grad():
            other = model(digits, z_init=z_init)
        assert model.last_state is not None
        assert float(((model.last_state - z_star).flatten(1).norm(dim=1) / scale.flatten()).max()) < 1e-4
        assert torch.allclose(other, logits, atol=1e-4)
    # The projection does not move the equilibrium: z* is the fixed point of the plain cell.
    with torch.no_grad():
        plain = model.f(z_star, model.inject(digits), model.cell.effective_weight())
    assert float(((plain - z_star).flatten(1).norm(dim=1) / scale.flatten()).max()) < 1e-5


def test_orthogonal_layer_stays_orthogonal_through_training(trained: LyaDEQClassifier) -> None:
    assert trained.fc is not None
    weight = trained.fc.weight.detach()
    initial = make().fc
    assert initial is not None
    assert float((weight - initial.weight.detach()).abs().max()) > 1e-2  # training moved it
    eye = torch.eye(weight.shape[0])
    assert float((weight @ weight.T - eye).abs().max()) < 1e-5
    # Large optimizer steps on top, in eval and training mode alike.
    model = make()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.rand(8, 1, 8, 8)
    for _ in range(5):
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        optimizer.step()
    assert model.fc is not None
    weight = model.fc.weight.detach()
    assert float((weight @ weight.T - eye).abs().max()) < 1e-5


def test_input_gradient_is_exact_despite_the_detached_projection() -> None:
    tight = SolverSpec(
        f_solver="fixed_point_iter", f_max_iter=80, f_tol=1e-13, f_stop_mode="abs",
        b_solver="anderson", b_max_iter=100, b_tol=1e-12, b_stop_mode="abs",
    )  # fmt: skip
    torch.manual_seed(0)
    model = create_model("lyadeq", (1, 8, 8), 10, tight, channels=4).double().eval()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    direction = torch.randn(2, 10, dtype=torch.float64)

    def loss(inputs: Tensor) -> Tensor:
        return (model(inputs) * direction).sum()

    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(xg), xg)
    h = 1e-6
    for v in torch.randn(4, *x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype):
        with torch.no_grad():
            numeric = (loss(x + h * v) - loss(x - h * v)) / (2 * h)
        assert abs(float((grad * v).sum() - numeric)) <= 1e-6 * max(1.0, abs(float(numeric)))


def test_lyapunov_weights_are_fixed_buffers_saved_with_the_model() -> None:
    model = make()
    assert not [name for name, _ in model.named_parameters() if name.startswith("lyapunov")]
    assert {"lyapunov.icnn.w_hidden", "lyapunov.icnn.w_out"} <= set(model.state_dict())
    ablation = make(orthogonal=False)
    assert ablation.fc is None
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in ablation.parameters()) == 256 * 257
