"""AttackView: per-example warm starts that never cross examples, and honest autograd wiring."""

import torch

from robustdeq.data import load
from robustdeq.deq import SolverSpec
from robustdeq.evaluation.view import AttackView, supports_warm_start
from robustdeq.models import create_model
from robustdeq.threat import ThreatModel

THREAT = ThreatModel("Linf", 0.2)


def deq() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("deq", (1, 8, 8), 10, SolverSpec(f_tol=1e-5)).eval()


def test_rows_are_matched_to_the_unique_example_whose_ball_holds_them() -> None:
    x = load("digits", "test").x[:20]
    view = AttackView(deq(), x, THREAT)
    noisy = THREAT.project(x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)), x)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(view.match(noisy[order]), order)
    assert view.match(torch.full((1, 1, 8, 8), 0.5)).tolist() == [-1]  # no example's ball
    twins = AttackView(deq(), torch.stack([x[0], x[0]]), THREAT)
    assert twins.match(x[:1]).tolist() == [-1]  # ambiguous: start cold


def brute_force_match(rows: torch.Tensor, anchors: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """Every row against every example on every feature: the unique example within eps, else -1."""
    diff = rows.flatten(1)[:, None, :] - anchors.flatten(1)[None]
    dist = diff.abs().amax(-1) if threat.norm == "Linf" else diff.norm(dim=-1)
    inside = dist <= threat.eps + 1e-6
    return torch.where(inside.sum(1) == 1, inside.float().argmax(1), -1)


def test_screened_matching_agrees_with_comparing_every_feature() -> None:
    """The matching screens pairs on a few features before comparing them in full: it must find
    exactly what comparing every feature of every pair finds, ambiguous and unmatched rows included."""
    generator = torch.Generator().manual_seed(2)
    x = load("digits", "test").x[:60]
    x = torch.cat([x, x[:3], (x[3:6] + 0.05).clamp(0, 1)])  # duplicates and overlapping balls
    cases = [(ThreatModel("Linf", 0.2), 0.5), (ThreatModel("L2", 1.0), 0.4), (ThreatModel("Linf", 0.6), 0.9)]
    for threat, scale in cases:
        view = AttackView(deq(), x, threat)
        noisy = (x + scale * torch.randn(x.shape, generator=generator)).clamp(0, 1)
        rows = torch.cat([threat.project(noisy, x), noisy, torch.rand(5, 1, 8, 8, generator=generator)])
        rows = rows[torch.randperm(len(rows), generator=generator)]
        expected = brute_force_match(rows, x, threat)
        assert torch.equal(view.match(rows), expected)
        assert (expected >= 0).any() and (expected < 0).any()  # both kinds of rows were met


def test_warm_starts_never_leak_between_examples() -> None:
    model = deq()
    assert supports_warm_start(model)
    x = load("digits", "test").x[:16]
    steps = [THREAT.project(x + 0.05 * k * torch.randn(x.shape, generator=torch.Generator().manual_seed(k)), x)
             for k in range(1, 4)]  # fmt: skip
    plain = AttackView(model, x, THREAT, warm_start=True)
    shuffled = AttackView(model, x, THREAT, warm_start=True)
    with torch.no_grad():
        for k, xs in enumerate(steps):
            expected = plain(xs)
            order = torch.randperm(16, generator=torch.Generator().manual_seed(10 + k))
            got = shuffled(xs[order])
            assert torch.allclose(got, expected[order], atol=1e-4)
            cold = model(xs)  # the unique fixed point, to the solver tolerance
            assert torch.allclose(expected, cold, atol=1e-3)
    assert plain.warm_rows == 32 and plain.cold_rows == 16  # the first call is cold
    assert shuffled.warm_rows == plain.warm_rows


def test_warm_start_saves_solver_steps() -> None:
    model = deq()
    x = load("digits", "test").x[:32]
    near = THREAT.project(x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)), x)
    counters = model.equilibrium.counters
    with torch.no_grad():
        view = AttackView(model, x, THREAT, warm_start=True)
        view(x)
        counters.reset()
        view(near)
        warm = counters.forward_evals
        counters.reset()
        AttackView(model, x, THREAT, warm_start=False)(near)
        cold = counters.forward_evals
    assert warm < cold


def test_explicit_models_pass_through() -> None:
    torch.manual_seed(0)
    model = create_model("explicit", (1, 8, 8), 10).eval()
    x = load("digits", "test").x[:4]
    view = AttackView(model, x, THREAT, warm_start=True)
    assert not view.warm_start
    with torch.no_grad():
        assert torch.equal(view(x), model(x))
