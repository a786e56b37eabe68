"""LyaDEQ (Chu et al. 2023) in robustdeq's reading (robustdeq/models/lyadeq.py, docs/lyadeq.md): a learned
convex Lyapunov function of the state, the dynamics projected so that it decreases, the states the head
reads drawn together, the orthogonal layer; and the residual construction kept as an ablation."""

import dataclasses
import math
from pathlib import Path
from typing import cast

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from robustdeq.data import load
from robustdeq.deq import SolverSpec
from robustdeq.errors import RobustdeqError
from robustdeq.models import create_model
from robustdeq.models.lyadeq import LyaDEQClassifier
from robustdeq.models.lyadeq_residual import LyaDEQResidual
from robustdeq.models.lyapunov import LyapunovFunction
from robustdeq.records.defense import DefenseSpec, ModelSpec, TrainSpec, load_defense
from robustdeq.threat import ThreatModel
from robustdeq.training import build_model, train_model


def make(**settings: object) -> LyaDEQClassifier:
    torch.manual_seed(0)
    model = create_model("lyadeq", (1, 8, 8), 10, None, **settings)  # type: ignore[arg-type]
    assert isinstance(model, LyaDEQClassifier)
    return model


@pytest.fixture(scope="module")
def trained() -> LyaDEQClassifier:
    """A LyaDEQ (the reference settings) trained for 3 epochs on clean digits."""
    defense = DefenseSpec("lyadeq", "lyadeq", ModelSpec("lyadeq", {}), TrainSpec(epochs=3, lr=3e-3))
    model = train_model(defense, "digits", load("digits", "train"), ThreatModel("Linf", 0.2)).model
    assert isinstance(model, LyaDEQClassifier)
    return model.eval()


@pytest.fixture(scope="module")
def digits() -> Tensor:
    return load("digits", "test").x[:64]


def second_differences(values: Tensor) -> Tensor:
    return values[:-2] - 2 * values[1:-1] + values[2:]


def test_lyapunov_function_is_nonnegative_convex_and_zero_only_at_the_origin() -> None:
    torch.manual_seed(0)
    lyapunov = LyapunovFunction(16, 16, 0.01, 1.0)
    icnn = lyapunov.icnn
    assert bool((icnn.w_hidden >= 0).all()) and bool((icnn.w_out >= 0).all())
    g = torch.Generator().manual_seed(0)
    ends = 3 * torch.randn(2, 64, 16, 8, 8, generator=g)
    segments = [(1 - t) * ends[0] + t * ends[1] for t in torch.linspace(0, 1, 11)]
    with torch.no_grad():
        v = torch.stack([lyapunov(s) for s in segments])  # (11, 64)
        assert bool((v >= 0).all())
        assert float(second_differences(v).min()) >= -1e-5 * float(v.max())
        assert float(lyapunov(torch.zeros(1, 16, 8, 8))) == 0.0
        squares = torch.stack([s.flatten(1).pow(2).sum(1) for s in segments])
        assert bool((v >= 0.999 * lyapunov.eps * squares).all())
        # The check has teeth: g itself is convex, and with negative output weights it is not.
        gv = torch.stack([icnn(s) for s in segments])
        assert float(second_differences(gv).min()) >= -1e-5 * float(gv.abs().max())
        icnn.out_raw.copy_(torch.full_like(icnn.out_raw, 3.0))
        icnn.scale = -1.0
        gv = torch.stack([icnn(s) for s in segments])
        assert float(second_differences(gv).min()) < -1e-3 * float(gv.abs().max())


def test_closed_form_gradient_of_v_matches_autograd() -> None:
    torch.manual_seed(0)
    lyapunov = LyapunovFunction(16, 16, 0.01, 1.0).double()
    s = torch.randn(4, 16, 8, 8, dtype=torch.float64, requires_grad=True)
    value, grad = lyapunov.value_and_grad(s.detach())
    zero = torch.zeros_like(s[:1]).requires_grad_(True)
    (dg0,) = torch.autograd.grad(lyapunov.icnn(zero).sum(), zero)
    flat = s.flatten(1)
    by_autograd = lyapunov.icnn(s) - lyapunov.icnn(zero).detach() - (dg0.flatten(1) * flat).sum(1)
    by_autograd = by_autograd + lyapunov.eps * flat.pow(2).sum(1)
    (expected,) = torch.autograd.grad(by_autograd.sum(), s)
    assert torch.allclose(value, by_autograd.detach())
    assert torch.allclose(grad, expected, rtol=1e-10, atol=1e-12)


def test_projected_dynamics_decrease_v_at_rate_alpha(trained: LyaDEQClassifier, digits: Tensor) -> None:
    model = trained
    with torch.no_grad():
        u, weight = model.inject(digits), model.cell.effective_weight()
        states = model.trajectory(digits)  # the states the solver visits
    g = torch.Generator().manual_seed(0)
    z = torch.cat([*states, *(s * torch.rand(len(digits), *model.state_shape, generator=g) for s in (0.1, 1.0))])
    u = u.repeat(len(z) // len(digits), 1, 1, 1)
    z.requires_grad_(True)
    v = model.lyapunov(z)
    (grad_v,) = torch.autograd.grad(v.sum(), z)  # by autograd, independently of the model's formula
    v = v.detach()
    with torch.no_grad():
        fz = model.f(z, u, weight)
        projected_step = fz - model.correction(z, fz)[0]
    plain = (grad_v * (fz - z)).flatten(1).sum(1)
    projected = (grad_v * (projected_step - z)).flatten(1).sum(1)
    assert bool((v > 0).all())
    assert float((plain > -model.alpha * v).float().mean()) > 0.5  # the cell alone raises V mostly ...
    assert bool((projected <= -model.alpha * v + 1e-4 * v).all())  # ... along the projected field it falls


def test_v_decreases_along_the_solver_trajectory(trained: LyaDEQClassifier, digits: Tensor) -> None:
    with torch.no_grad():
        v = torch.stack([trained.lyapunov(z) for z in trained.trajectory(digits)], 1)  # (B, K)
        assert bool((v > 0).all())
        # At least the factor exp(-alpha) per solver step (float32 round-off aside).
        assert bool((v[:, 1:] <= math.exp(-trained.alpha) * v[:, :-1] * (1 + 1e-5)).all())
        # The bare Euler step of the projected field misses that factor somewhere along the
        # trajectories (it overshoots; how often depends on the training run: between 5% and 100%
        # of the digits at the first step in runs differing by a 1e-7 change of the learning
        # rate): the safeguard is what makes the check above hold.
        u, weight = trained.inject(digits), trained.cell.effective_weight()
        missed = 0
        for z in trained.trajectory(digits)[:-1]:
            fz = trained.f(z, u, weight)
            euler = fz - trained.correction(z, fz)[0]
            missed += int((trained.lyapunov(euler) > math.exp(-trained.alpha) * trained.lyapunov(z)).sum())
        assert missed > 0


def test_the_module_moves_the_states_the_head_reads_and_draws_them_together(
    trained: LyaDEQClassifier, digits: Tensor
) -> None:
    with torch.no_grad():
        lyapunov_states = trained.trajectory(digits)[-1]
        trained.use_lyapunov = False
        try:
            plain_states = trained.trajectory(digits)[-1]
            plain_logits = trained(digits)
        finally:
            trained.use_lyapunov = True
        logits = trained(digits)
    moved = (lyapunov_states - plain_states).flatten(1).norm(dim=1) / plain_states.flatten(1).norm(dim=1)
    assert float(moved.mean()) > 0.05
    # Drawn together: the states lie closer to one another (mean pairwise distance) than the plain ones.
    assert float(torch.pdist(lyapunov_states.flatten(1)).mean()) < float(torch.pdist(plain_states.flatten(1)).mean())
    assert not torch.allclose(logits, plain_logits, atol=1e-3)  # switching the module off changes the output
    assert trained.projection_rate(digits) > 0.3


def test_v_is_trained_end_to_end_by_the_task_loss(trained: LyaDEQClassifier, digits: Tensor) -> None:
    fresh = make()
    model = make()
    loss = torch.nn.functional.cross_entropy(model(digits), load("digits", "test").y[:64])
    grads = torch.autograd.grad(loss, list(model.lyapunov.parameters()))
    assert all(float(g.abs().max()) > 0 for g in grads)
    pairs = zip(trained.lyapunov.parameters(), fresh.lyapunov.parameters(), strict=True)
    moved = [float((a - b).detach().abs().max()) for a, b in pairs]
    assert min(moved) > 1e-4  # every tensor of V changed during training
    # Without the module the same model's V receives no gradient at all.
    off = make(lyapunov=False)
    loss = off(digits).sum()
    assert all(g is None for g in torch.autograd.grad(loss, list(off.lyapunov.parameters()), allow_unused=True))


def test_orthogonal_layer_stays_orthogonal_through_training(trained: LyaDEQClassifier) -> None:
    fc = trained.head.fc
    initial = make().head.fc
    assert fc is not None and initial is not None
    weight = fc.weight.detach()
    assert float((weight - initial.weight.detach()).abs().max()) > 1e-2  # training moved it
    eye = torch.eye(weight.shape[0])
    assert float((weight @ weight.T - eye).abs().max()) < 1e-5
    model = make()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.rand(8, 1, 8, 8)
    for _ in range(5):
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        optimizer.step()
    assert model.head.fc is not None
    weight = model.head.fc.weight.detach()
    assert float((weight @ weight.T - eye).abs().max()) < 1e-5
    ablation = make(orthogonal=False)
    assert ablation.head.fc is None
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in ablation.parameters()) == 256 * 257


def test_input_gradient_of_the_readout_is_exact() -> None:
    torch.manual_seed(0)
    model = create_model("lyadeq", (1, 8, 8), 10, None, channels=4).double().eval()
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


def test_the_readout_is_not_an_equilibrium_and_the_twin_drops_only_the_module(
    trained: LyaDEQClassifier, digits: Tensor
) -> None:
    residual = trained.readout_residual(digits)
    assert residual.shape == (len(digits),) and float(residual.mean()) > 1e-3
    twin = trained.explicit_twin()
    with torch.no_grad():
        trained.use_lyapunov = False
        try:
            plain = trained(digits)
        finally:
            trained.use_lyapunov = True
        assert torch.equal(twin(digits), plain)


def test_residual_construction_keeps_the_plain_fixed_point() -> None:
    """The ablation lyadeq_residual: V on z - f(z); the projection never moves the equilibrium."""
    solver = SolverSpec(f_solver="fixed_point_iter", f_max_iter=60, f_tol=1e-6)
    torch.manual_seed(0)
    model = create_model("lyadeq_residual", (1, 8, 8), 10, solver)
    assert isinstance(model, LyaDEQResidual)
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        model(x)
        z_star = model.last_state
        assert z_star is not None
        plain = model.f(z_star, model.inject(x), model.cell.effective_weight())
    scale = z_star.flatten(1).norm(dim=1)
    assert float(((plain - z_star).flatten(1).norm(dim=1) / scale).max()) < 1e-4  # within the solver tolerance


def test_the_orthogonal_weight_is_reused_in_eval_mode_until_its_parameters_change(digits: Tensor) -> None:
    model = make().eval()
    head = model.head
    assert head.fc is not None
    with torch.no_grad():
        model(digits)
        assert head._frozen is not None
        first = head._frozen[1]
        assert torch.equal(first, head.fc.weight)
        model(digits)
        assert head._frozen[1] is first  # reused: no matrix exponential per forward
        next(head.fc.parameters()).add_(0.01)  # an optimiser step changes the parameters' versions
        model(digits)
        assert head._frozen[1] is not first and torch.equal(head._frozen[1], head.fc.weight)
    model.train()
    x = digits[:4].clone()
    loss = model(x).sum()
    (grad,) = torch.autograd.grad(loss, [next(head.fc.parameters())])
    assert float(grad.abs().max()) > 0  # in train mode Q stays differentiable in its parameters


ABLATIONS = Path(__file__).resolve().parent.parent / "benchmarks" / "ablations"
LAYER_SETTINGS = ("orthogonal", "unconstrained_layer")


@pytest.mark.parametrize("recipe", ["standard", "trades"])
def test_the_unconstrained_arm_has_the_orthogonal_arms_size_and_trains_one_batch(recipe: str) -> None:
    """benchmarks/ablations/lyadeq-unconstrained-only-*: the orthogonal-only arm with a plain 256x256 layer in
    place of the orthogonal one (same size, no constraint), so orthogonality is not confounded with capacity."""
    arm = load_defense(ABLATIONS / f"lyadeq-unconstrained-only-{recipe}")
    orthogonal_arm = load_defense(ABLATIONS / f"lyadeq-orthogonal-only-{recipe}")
    assert arm.train == orthogonal_arm.train
    assert {k: v for k, v in arm.model.settings.items() if k not in LAYER_SETTINGS} == {
        k: v for k, v in orthogonal_arm.model.settings.items() if k not in LAYER_SETTINGS
    }
    torch.manual_seed(0)
    model = build_model(arm, "digits")
    torch.manual_seed(0)
    reference = build_model(orthogonal_arm, "digits")
    assert isinstance(model, LyaDEQClassifier) and isinstance(reference, LyaDEQClassifier)
    assert not model.use_lyapunov and not reference.use_lyapunov
    fc = model.head.fc
    assert type(fc) is nn.Linear and not parametrize.is_parametrized(fc) and fc.weight.shape == (256, 256)
    assert parametrize.is_parametrized(cast(nn.Module, reference.head.fc))

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(model) == count(reference) == 71_642
    assert count(model) - count(make(orthogonal=False)) == 256 * 257

    # One training batch (64 digits, the manifest's batch size) with the manifest's recipe.
    initial = fc.weight.detach().clone()
    one_batch = dataclasses.replace(arm.train, epochs=1, train_subset=arm.train.batch_size)
    trained = train_model(arm, "digits", load("digits", "train"), ThreatModel("Linf", 0.2), one_batch).model
    assert isinstance(trained, LyaDEQClassifier) and trained.head.fc is not None
    weight = cast(Tensor, trained.head.fc.weight).detach()
    assert float((weight - initial).abs().max()) > 0  # the layer trained ...
    assert float((weight @ weight.T - torch.eye(256)).abs().max()) > 0.1  # ... and is not orthogonal
    with torch.no_grad():
        logits = trained(load("digits", "test").x[:8])
    assert logits.shape == (8, 10) and bool(torch.isfinite(logits).all())


def test_orthogonal_and_unconstrained_layer_exclude_each_other() -> None:
    with pytest.raises(RobustdeqError, match="model family 'lyadeq': orthogonal and unconstrained_layer exclude"):
        make(orthogonal=True, unconstrained_layer=True)


def test_fast_softplus_matches_torch_and_its_derivative_is_the_sigmoid() -> None:
    from robustdeq.models.lyapunov import softplus

    x = 6 * torch.randn(4096, generator=torch.Generator().manual_seed(0))
    x = torch.cat([x, torch.tensor([-100.0, -30.0, 0.0, 30.0, 100.0])])
    assert float((softplus(x) - torch.nn.functional.softplus(x)).abs().max()) <= 1e-6
    assert bool((softplus(x) >= 0).all())
    xd = x.double().requires_grad_(True)
    (grad,) = torch.autograd.grad(softplus(xd).sum(), xd)
    assert torch.allclose(grad, torch.sigmoid(xd.detach()), rtol=0, atol=0)
    assert torch.autograd.gradcheck(softplus, (xd[:64].detach().requires_grad_(True),))


def test_the_trajectory_reuses_the_safeguards_evaluation_without_changing_a_state(
    trained: LyaDEQClassifier, digits: Tensor
) -> None:
    """The trajectory carries V and grad V from each step's safeguard to the next step's correction
    (recomputed only on the rows the safeguard scaled): the same states as the step by step map,
    and the same input gradients up to float32 summation order."""
    x = digits.clone().requires_grad_(True)
    sizes: list[int] = []  # the batch of every pass of V's network (value, or value and gradient)
    icnn = trained.lyapunov.icnn
    preactivations = icnn._preactivations

    def counted(s: Tensor) -> tuple[Tensor, Tensor]:
        sizes.append(len(s))
        return preactivations(s)

    icnn._preactivations = counted  # type: ignore[method-assign]
    try:
        states = trained.trajectory(x)
    finally:
        del icnn._preactivations
    # Step by step, every step evaluates V's network twice on the whole batch (the correction at z,
    # the safeguard at the candidate); carried on, once (plus the origin and the first correction),
    # and again only on the rows the safeguard scaled: here some but not all rows at some step.
    origin, *passes = sizes  # the first pass is V's constants at the origin (one row)
    assert origin == 1
    assert passes.count(len(x)) < 2 * (trained.steps - 1)
    assert any(0 < n < len(x) for n in passes)
    u, weight = trained.inject(x), trained.cell.effective_weight()
    z = trained.f(x.new_zeros(len(x), *trained.state_shape), u, weight)
    origin = trained.lyapunov.origin(z)
    stepwise = [z]
    for _ in range(trained.steps - 1):
        stepwise.append(trained.step(stepwise[-1], u, weight, origin))
    for ours, theirs in zip(states, stepwise, strict=True):
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    (g_ours,) = torch.autograd.grad(trained.head(states[-1]).logsumexp(1).sum(), x)
    (g_theirs,) = torch.autograd.grad(trained.head(stepwise[-1]).logsumexp(1).sum(), x)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-7)
