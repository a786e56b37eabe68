"""Fast attacks on DEQs (per-example solves, warm starts, held examples) never change what is computed."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchdeq.solver import get_solver

from robustdeq.data import load
from robustdeq.deq import AttackSession, Equilibrium, SolverSpec, grad_mode
from robustdeq.deq.rowwise import fixed_point
from robustdeq.errors import RobustdeqError
from robustdeq.evaluation import evaluate
from robustdeq.evaluation.attacks import AutoAttackSuite
from robustdeq.evaluation.view import AttackView
from robustdeq.models import create_model
from robustdeq.records.protocol import load_protocol
from robustdeq.threat import ThreatModel

THREAT = ThreatModel("Linf", 0.2)


def deq(tol: float = 1e-3) -> nn.Module:
    torch.manual_seed(0)
    spec = SolverSpec(f_tol=tol, b_tol=tol)
    return create_model("deq", (1, 8, 8), 10, spec).eval()


def test_per_example_fixed_point_matches_torchdeq_and_stops_each_row_on_its_own() -> None:
    torch.manual_seed(0)
    rates = torch.tensor([0.1, 0.2, 0.3, 0.95])[:, None]  # row i contracts at rate[i]
    b = torch.randn(4, 20)
    sizes: list[int] = []

    def f(z: Tensor, rows: Tensor) -> Tensor:
        sizes.append(len(rows))
        return rates[rows] * torch.tanh(z) + b[rows]

    result = fixed_point(f, torch.zeros(4, 20), max_iter=400, tol=1e-6)
    expected, _, _ = get_solver("anderson")(
        lambda z: rates * torch.tanh(z) + b, torch.zeros(4, 20), max_iter=60, tol=1e-8, stop_mode="rel", lam=1e-8
    )
    assert torch.allclose(result.z, expected, atol=1e-4)
    assert bool((result.rel_residual <= 1e-6).all())
    assert result.nstep[0] < result.nstep[-1]  # the fast row stopped early ...
    assert sizes[0] == 4 and sizes[-1] < 4 and sizes == sorted(sizes, reverse=True)  # ... and left the batch
    assert sum(sizes) == int(result.nstep.sum())
    assert bool((result.trace[:, -1] == result.rel_residual).all())  # a row's last residual repeats to the end
    # Started at its fixed point, a row stops after one evaluation.
    again = fixed_point(f, result.z, max_iter=60, tol=1e-5)
    assert again.nstep.tolist() == [1, 1, 1, 1]


def test_a_session_gives_the_same_input_gradient_as_a_plain_solve() -> None:
    model = deq(tol=1e-6)
    x = load("digits", "test").x[:8]
    y = load("digits", "test").y[:8]

    def gradient(session: AttackSession | None) -> Tensor:
        xr = x.clone().requires_grad_(True)
        layer: Equilibrium = model.equilibrium
        if session is None:
            loss = F.cross_entropy(model(xr), y)
        else:
            with layer.attack_session(session):
                loss = F.cross_entropy(model(xr), y)
        (g,) = torch.autograd.grad(loss, xr)
        return g

    adjoints: list[Tensor] = []
    plain = gradient(None)
    cold = gradient(AttackSession(None, adjoints.append))
    warm = gradient(AttackSession(adjoints[0], adjoints.append))  # started at the solution
    assert torch.allclose(cold, plain, rtol=1e-3, atol=1e-6)
    assert torch.allclose(warm, plain, rtol=1e-3, atol=1e-6)


def test_warm_states_and_adjoints_never_leak_between_examples() -> None:
    model = deq()
    test = load("digits", "test")
    x, y = test.x[:16], test.y[:16]
    plain = AttackView(model, x, THREAT, warm_start=True)
    shuffled = AttackView(model, x, THREAT, warm_start=True)
    xs = x.clone()
    for k in range(4):  # PGD-like steps; the shuffled view sees the rows in another order each time
        order = torch.randperm(16, generator=torch.Generator().manual_seed(k))
        a = xs.clone().requires_grad_(True)
        (ga,) = torch.autograd.grad(F.cross_entropy(plain(a), y, reduction="sum"), a)
        b = xs[order].clone().requires_grad_(True)
        (gb,) = torch.autograd.grad(F.cross_entropy(shuffled(b), y[order], reduction="sum"), b)
        c = xs.clone().requires_grad_(True)
        (gc,) = torch.autograd.grad(F.cross_entropy(model(c), y, reduction="sum"), c)  # cold, no view
        assert torch.allclose(gb, ga[order], rtol=1e-3, atol=1e-5)
        cosine = F.cosine_similarity(ga.flatten(1), gc.flatten(1))
        assert bool((cosine > 0.99).all())
        xs = THREAT.project(xs + 0.05 * ga.sign(), x)
    assert plain.have_adjoint.all() and plain.warm_rows == 48


def test_held_example_keeps_its_point_and_costs_no_solve() -> None:
    model = deq()
    test = load("digits", "test")
    x = test.x[:8]
    with torch.no_grad():
        predicted = model(x).argmax(1)
    wrong = (predicted + 1) % 10  # labels that make every example "broken" at once
    view = AttackView(model, x, THREAT, warm_start=True, labels=wrong)
    xr = x.clone().requires_grad_(True)
    logits = view(xr)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, wrong), xr)
    assert bool((grad == 0).all())  # a sign-gradient attack stays where it is
    counters = model.equilibrium.counters
    counters.reset()
    again = view(x.clone().requires_grad_(True))
    assert counters.forward_evals == 0 and view.held_rows == 8
    assert torch.equal(again.detach(), logits.detach())


def test_clean_inputs_always_start_cold_so_repeated_calls_agree() -> None:
    model = deq()
    x = load("digits", "test").x[:8]
    view = AttackView(model, x, THREAT, warm_start=True)
    with torch.no_grad():
        first = view(x)
        view(THREAT.project(x + 0.05, x))  # leaves warm states behind
        # AutoAttack's randomness check calls the model on the clean inputs five times in a row.
        assert all(torch.equal(view(x), first) for _ in range(4))
    assert view.warm_rows == 8


def test_verification_solves_from_a_cold_start_with_the_protocol_solver(tiny_protocol: Path) -> None:
    text = tiny_protocol.read_text().replace("seed = 0\n", "seed = 0\nwarm_start = true\n", 1)
    tiny_protocol.write_text(text)
    protocol = load_protocol(tiny_protocol)
    assert protocol.warm_start
    model = deq()
    layer: Equilibrium = model.equilibrium
    calls: list[tuple[bool, bool]] = []  # (inside an attack session, started from zeros)
    solve = layer.forward

    def recording(f, z0, inputs=None, **options):  # type: ignore[no-untyped-def]
        calls.append((layer._session is not None, bool((z0 == 0).all())))
        return solve(f, z0, inputs, **options)

    layer.forward = recording  # type: ignore[method-assign]
    evaluate(model, protocol, load("digits", "test"))
    outside = [cold for session, cold in calls if not session]
    inside = [cold for session, cold in calls if session]
    assert outside and all(outside)  # clean predictions and every verification: cold, batch solver
    assert inside and not all(inside)  # the attacks did use warm starts


def test_intermediate_state_modes() -> None:
    torch.manual_seed(0)
    model = create_model("deq", (1, 8, 8), 10, SolverSpec(phantom_steps=1)).eval()
    test = load("digits", "test")
    x, y = test.x[:8], test.y[:8]

    def logits_and_grad(mode: str) -> tuple[Tensor, Tensor]:
        xr = x.clone().requires_grad_(True)
        with grad_mode(model, mode):
            logits = model(xr)
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y), xr)
        return logits.detach(), g

    # A state past the solver's stop is its final state: then it is the phantom gradient.
    late, g_late = logits_and_grad("state-40")
    phantom, g_phantom = logits_and_grad("phantom")
    assert torch.allclose(late, phantom, atol=1e-6) and torch.allclose(g_late, g_phantom, atol=1e-6)
    early, g_early = logits_and_grad("state-3")
    ensemble, g_ensemble = logits_and_grad("states")
    assert (early - late).abs().max() > 3e-4  # an early state is not the equilibrium
    for g in (g_early, g_ensemble):
        assert bool(torch.isfinite(g).all()) and bool((g.flatten(1).abs().sum(1) > 0).all())
    with pytest.raises(RobustdeqError, match="unknown gradient mode"):
        with grad_mode(model, "state-x"):
            pass


def test_autoattack_warm_starts_apgd_and_solves_fab_and_its_own_checks_cold() -> None:
    """FAB's points lie on the decision boundary, where a warm solve's lag could disagree with the
    cold verification (AttackView.cold): FAB and the suite's classification of every sub-attack's
    output go through a cold view; APGD through the warm one."""
    model = deq()
    x = load("digits", "test").x[:8]
    with torch.no_grad():
        y = model(x).argmax(1)  # the untrained model's own labels: every example starts correct
    threat = ThreatModel("Linf", 0.2)
    for attacks, warm_expected in ((("apgd-ce",), True), (("fab-t",), False)):
        view = AttackView(model, x, threat, warm_start=True)
        suite = AutoAttackSuite(threat, version="custom", attacks=attacks, n_iter=3)
        suite(view, x, y)
        assert (view.warm_rows > 0) == warm_expected, attacks
