"""Yang et al. (2023): random intermediate states in training, input entropy reduction at inference."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

from robustdeq.data import load
from robustdeq.deq import equilibria
from robustdeq.errors import RobustdeqError
from robustdeq.evaluation import evaluate
from robustdeq.evaluation.attacks import AutoAttackSuite
from robustdeq.models.entropy import EntropyReduced, EntropySettings, entropy
from robustdeq.pipeline import Budget, TrainedModel, make_entry
from robustdeq.records.defense import DefenseSpec, find_defense
from robustdeq.records.entry import validate_entry
from robustdeq.records.protocol import find_protocol, load_protocol
from robustdeq.threat import ThreatModel, pgd
from robustdeq.training import build_model, train_model, training_recipe
from robustdeq.training.recipes import BatchNoise

PROTOCOL = find_protocol("digits-linf")
THREAT = ThreatModel("Linf", 0.2)

SMALL_PROTOCOL = """
id = "loop-check"
version = 1
dataset = "digits"

[threat_model]
norm = "Linf"
eps = 0.2

[subset]
n_examples = 24

[evaluation]
batch_size = 24
seed = 0

[[attacks]]
name = "pgd"
steps = 5
step_size = 0.05
grad_modes = ["ift", "unroll"]

[[attacks]]
name = "autoattack"
version = "custom"
attacks = ["apgd-ce"]
n_iter = 5
"""


def _shrunk(defense: str, epochs: int, subset: int, **recipe: Any) -> DefenseSpec:
    spec = find_defense(defense)
    settings = {**spec.train.recipe_settings, **recipe}
    train = dataclasses.replace(spec.train, epochs=epochs, train_subset=subset, recipe_settings=settings)
    return dataclasses.replace(spec, train=train)


@pytest.fixture(scope="module")
def data() -> tuple[Any, Any]:
    return load("digits", "train"), load("digits", "test")


@pytest.fixture(scope="module")
def looped(data: tuple[Any, Any]) -> nn.Module:
    """deq-pgd-at-er's model with a short PGD-AT (the loop is not part of training)."""
    result = train_model(_shrunk("deq-pgd-at-er", 3, 512), "digits", data[0], THREAT)
    assert isinstance(result.model, EntropyReduced)
    return result.model.eval()


def test_random_intermediate_states_vary_within_the_range(data: tuple[Any, Any]) -> None:
    defense = find_defense("deq-ris-pgd-at")
    train = dataclasses.replace(defense.train, recipe_settings={"base": "standard", "min_steps": 3, "max_steps": 6})
    recipe = training_recipe(train, THREAT, "test")
    torch.manual_seed(0)
    model = build_model(defense, "digits").train()
    layer = equilibria(model)[0]
    phantom = layer.spec.phantom_steps  # the gradient's damped steps on top of the solve
    generator = torch.Generator().manual_seed(0)
    x, y = data[0].x, data[0].y
    seen = []
    for b in range(12):
        before = layer.counters.forward_evals
        recipe.loss(model, x[64 * b : 64 * (b + 1)], y[64 * b : 64 * (b + 1)], BatchNoise(generator, 64)).backward()
        seen.append(layer.counters.forward_evals - before - phantom)  # cell evaluations of the solve
    assert all(3 <= n <= 6 for n in seen), seen
    assert len(set(seen)) >= 3, seen
    # outside training the full solver runs: the clean solve goes past the training cap
    model.eval()
    before = layer.counters.forward_evals
    with torch.no_grad():
        model(data[1].x[:64])
    assert layer.counters.forward_evals - before > 6


def test_random_intermediate_states_need_the_phantom_gradient(data: tuple[Any, Any]) -> None:
    spec = find_defense("deq-ris-pgd-at")
    solver = spec.solver.replace(train_grad="ift")
    with pytest.raises(RobustdeqError, match="phantom"):
        train_model(dataclasses.replace(_shrunk("deq-ris-pgd-at", 1, 64), solver=solver), "digits", data[0], THREAT)


def test_entropy_reduction_lowers_entropy_inside_the_ball(looped: EntropyReduced, data: tuple[Any, Any]) -> None:
    x = data[1].x[:100]
    radius = looped.settings.radius
    with torch.no_grad():
        purified, _ = looped.purify(x)
        before = entropy(looped.base(x)).mean()
        after = entropy(looped(x)).mean()
    assert float(after) < float(before)
    assert float((purified - x).abs().max()) <= radius + 1e-6
    assert 0.0 <= float(purified.min()) and float(purified.max()) <= 1.0
    assert not torch.equal(purified, x)


def test_adaptive_attacks_through_the_loop_are_not_weaker(looped: EntropyReduced, data: tuple[Any, Any]) -> None:
    """Worst case of the unrolled and BPDA attacks <= the attack without the loop's gradient."""
    x, y = data[1].x[:64], data[1].y[:64]

    def survivors(mode: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        with looped.loop_gradient_mode(mode):
            x_adv = pgd(looped, x, y, THREAT, 10, 0.05, True, generator)
        assert float((x_adv - x).abs().max()) <= THREAT.eps + 1e-6
        with torch.no_grad():
            return looped(x_adv).argmax(1) == y

    with torch.no_grad():
        clean = looped(x).argmax(1) == y
    adaptive = clean & survivors("unroll") & survivors("bpda")
    non_adaptive = clean & survivors("skip")
    assert int(clean.sum()) > 32
    assert int(adaptive.sum()) <= int(non_adaptive.sum())
    assert int(adaptive.sum()) < int(clean.sum())


@pytest.mark.parametrize("readout", ["equilibrium", "early"])
def test_unrolled_gradient_is_the_derivative_of_the_loop(
    looped: EntropyReduced, data: tuple[Any, Any], readout: str
) -> None:
    """The unroll path's input gradient matches a finite difference of the whole looped model (a short
    loop with a small ball: the paper's 40 sign steps make the looped function piecewise constant in
    places, where no finite difference can check a derivative)."""
    short = EntropySettings(rounds=2, solver_steps=2, input_steps=3, step_size=0.02, radius=0.05, readout=readout)
    looped = EntropyReduced(looped.base, short).eval()
    x = data[1].x[:1].clone().requires_grad_(True)
    with looped.loop_gradient_mode("unroll"):
        (grad,) = torch.autograd.grad(looped(x)[0, 3], x)
        direction = torch.zeros_like(x)
        # a pixel the loop does not clip to [0, 1]: the function is smooth there
        inside = ((x.detach() > 0.3) & (x.detach() < 0.7)).flatten().nonzero()
        direction.view(-1)[inside[0]] = 1.0
        h = 1e-3
        with torch.no_grad():
            plus = looped(x.detach() + h * direction)[0, 3]
            minus = looped(x.detach() - h * direction)[0, 3]
    numeric = float((plus - minus) / (2 * h))
    assert float((grad * direction).sum()) == pytest.approx(numeric, rel=0.05, abs=1e-3)


def test_the_evaluation_attacks_every_loop_gradient_and_flags_the_loop(
    looped: EntropyReduced, data: tuple[Any, Any], tmp_path: Any
) -> None:
    path = tmp_path / "loop-check.toml"
    path.write_text(SMALL_PROTOCOL)
    protocol = load_protocol(path)
    result = evaluate(looped, protocol, data[1])
    expected = {"pgd", "pgd@unroll", "pgd+unroll", "pgd@unroll+unroll", "pgd+skip", "pgd@unroll+skip", "autoattack"}
    assert set(result.attack_correct) == expected
    assert result.attack_settings["pgd@unroll+unroll"]["loop_gradient"] == "unroll"
    assert result.attack_settings["pgd@unroll"]["loop_gradient"] == "bpda"
    assert result.attack_settings["autoattack"]["loop_gradient"] == "bpda"
    for survived in result.attack_correct.values():
        assert not bool((result.robust & ~survived).any())  # robust = survived every run
    defense = find_defense("deq-pgd-at-er")
    entry = make_entry(defense, protocol, TrainedModel(looped, defense.train.to_dict(), 0.0), result, Budget())
    assert "test_time_optimisation" in entry["flags"]
    validate_entry(entry)


def test_autoattack_flags_the_loop_and_only_the_loop(looped: EntropyReduced, data: tuple[Any, Any]) -> None:
    """pyautoattack's dynamic-defense check keeps its counts in a module-level dict; a model
    attacked after a looped one in the same process must not inherit the flag."""
    x, y = data[1].x[:8], data[1].y[:8]
    attack = AutoAttackSuite(THREAT, version="custom", attacks=("apgd-ce",), n_iter=2)
    assert "autoattack_dynamic_defense" in attack(looped, x, y).flags
    assert "autoattack_dynamic_defense" not in attack(looped.base, x, y).flags


def _recorded_forwards(model: nn.Module) -> list[tuple[bool, int | None, str]]:
    """(training, drawn budget or None, gradient mode) of every equilibrium forward of ``model``."""
    layer = equilibria(model)[0]
    seen: list[tuple[bool, int | None, str]] = []
    layer.register_forward_hook(
        lambda m, *_: seen.append((m.training, m.last_budget if m.sampling else None, m.active_grad_mode))
    )
    return seen


def test_paper_random_states_draw_a_budget_per_forward_also_inside_the_inner_attack(data: tuple[Any, Any]) -> None:
    defense = find_defense("deq-ris-pgd-at")  # the paper's settings: draw per forward, inner attack on the states
    recipe = training_recipe(defense.train, THREAT, "test")
    torch.manual_seed(0)
    model = build_model(defense, "digits").train()
    seen = _recorded_forwards(model)
    generator = torch.Generator().manual_seed(0)
    x, y = data[0].x, data[0].y
    for b in range(3):
        recipe.loss(model, x[32 * b : 32 * (b + 1)], y[32 * b : 32 * (b + 1)], BatchNoise(generator, 32)).backward()
    steps = recipe.settings()["base_settings"]["steps"]
    assert len(seen) == 3 * (steps + 1)  # every PGD step's forward and the training forward
    assert all(budget is not None and 1 <= budget <= 8 for _, budget, _ in seen)
    inner = [s for s in seen if not s[0]]
    assert len(inner) == 3 * steps and {mode for _, _, mode in inner} == {"phantom"}
    assert len({budget for _, budget, _ in seen[: steps + 1]}) > 1  # drawn anew within one batch
    # The earlier reading: one budget per batch for the training forward, the inner attack on the full solve.
    batchwise = dataclasses.replace(
        defense.train, recipe_settings={**defense.train.recipe_settings, "draw": "batch", "attack": "full"}
    )
    recipe = training_recipe(batchwise, THREAT, "test")
    seen.clear()
    recipe.loss(model, x[:32], y[:32], BatchNoise(generator, 32)).backward()
    assert [budget for training, budget, _ in seen if not training] == [None] * steps
    assert [training for training, budget, _ in seen if budget is not None] == [True]


@pytest.mark.parametrize("budget", [1, 2])
def test_a_budget_below_three_reaches_the_state_after_that_many_cell_evaluations(budget: int) -> None:
    torch.manual_seed(0)
    model = build_model(find_defense("deq-ris-pgd-at"), "digits").train()
    layer = equilibria(model)[0]
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad(), layer.budget(lambda: budget):
        model(x)
        u, weight = model.inject(x), model.cell.effective_weight()
        z = torch.zeros(4, *model.state_shape)
        for _ in range(budget):
            z = model.f(z, u, weight)
    assert model.last_state is not None and float(model.last_state.abs().max()) > 0  # not the initial guess
    assert torch.allclose(model.last_state, z, atol=1e-4)  # (training mode refines the norm estimate per call)


def test_paper_entropy_reduction_reads_the_early_state_within_the_eps_ball(data: tuple[Any, Any]) -> None:
    spec = find_defense("deq-pgd-at-er")
    settings = spec.model.settings["entropy_reduction"]
    assert settings["radius"] == PROTOCOL.threat.eps and settings["readout"] == "early"
    torch.manual_seed(0)
    model = build_model(spec, "digits").eval()
    assert isinstance(model, EntropyReduced)
    x = data[1].x[:16]
    with torch.no_grad():
        purified, z = model.purify(x)
        logits = model(x)
        assert torch.equal(logits, model.base.head(z))  # the early state, not re-solved
        assert not torch.allclose(logits, model.base(purified, z_init=z), atol=1e-4)
    assert float((purified - x).abs().max()) <= settings["radius"] + 1e-6
