"""Training recipes: perturbations stay in the ball, TRADES(beta=0) is standard training, JIIO converges."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustdeq.data import load
from robustdeq.deq import SolverSpec
from robustdeq.models import create_model
from robustdeq.records.defense import DefenseSpec, ModelSpec, TrainSpec
from robustdeq.threat import ThreatModel, pgd
from robustdeq.training import RECIPES, train_model
from robustdeq.training.jiio import JIIO
from robustdeq.training.recipes import TRADES, BatchNoise

THREATS = [ThreatModel("Linf", 0.2), ThreatModel("L2", 1.0)]


def spec(family: str, recipe: str, epochs: int = 1, **settings: object) -> DefenseSpec:
    return DefenseSpec(
        id=family, name=family, model=ModelSpec(family, {}), solver=SolverSpec() if family == "deq" else None,
        train=TrainSpec(recipe=recipe, epochs=epochs, lr=3e-3, train_subset=256, recipe_settings=dict(settings)),
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained_deq() -> nn.Module:
    train = load("digits", "train")
    return train_model(spec("deq", "standard", epochs=3), "digits", train, THREATS[0]).model.eval()


def batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    test = load("digits", "test")
    return test.x[:n], test.y[:n]


@pytest.mark.parametrize("threat", THREATS, ids=lambda t: t.norm)
def test_pgd_and_trades_perturbations_stay_in_the_ball(threat: ThreatModel) -> None:
    torch.manual_seed(0)
    model = create_model("explicit", (1, 8, 8), 10).eval()
    x, y = batch()
    x_pgd = pgd(model, x, y, threat, steps=5, step_size=threat.eps / 2, generator=torch.Generator().manual_seed(0))
    trades = TRADES(threat.norm, threat.eps, steps=5, step_size=threat.eps / 2, beta=6.0)
    x_trades = trades.perturb(model, x, BatchNoise(torch.Generator().manual_seed(0), len(x)))
    for x_adv in (x_pgd, x_trades):
        assert bool(threat.verify(x_adv, x).all())
        assert float(threat.distance(x_adv, x).max()) > 0.5 * threat.eps  # it moved


@pytest.mark.parametrize("family", ["explicit", "deq"])
def test_trades_with_beta_zero_is_standard_training(family: str) -> None:
    train = load("digits", "train")
    standard = train_model(spec(family, "standard"), "digits", train, THREATS[0]).model
    trades = train_model(spec(family, "trades", beta=0.0), "digits", train, THREATS[0]).model
    for (name, a), (_, b) in zip(standard.state_dict().items(), trades.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_trades_with_beta_trains_and_records_its_settings() -> None:
    result = train_model(spec("explicit", "trades", beta=3.0, steps=2), "digits", load("digits", "train"), THREATS[0])
    assert result.recipe_settings == {"norm": "Linf", "eps": 0.2, "steps": 2, "step_size": 0.25, "beta": 3.0}


@pytest.mark.parametrize("threat", THREATS, ids=lambda t: t.norm)
def test_jiio_converges_stays_in_the_ball_and_beats_a_few_pgd_steps(
    trained_deq: nn.Module, threat: ThreatModel
) -> None:
    x, y = batch()
    found = JIIO(threat.norm, threat.eps, iterations=30, step_size=threat.eps / 4).perturb(trained_deq, x, y)
    assert bool(threat.verify(found.x_adv, x).all())
    trace = found.rel_trace[:, 1:]  # column 0 is torchdeq's placeholder before the first step
    assert float(trace[:, -1].mean()) < 0.1 * float(trace[:, 0].mean())
    x_pgd = pgd(trained_deq, x, y, threat, steps=3, step_size=threat.eps / 4, random_start=False)
    with torch.no_grad():
        loss_jiio = F.cross_entropy(trained_deq(found.x_adv), y)
        loss_pgd = F.cross_entropy(trained_deq(x_pgd), y)
        loss_clean = F.cross_entropy(trained_deq(x), y)
    assert float(loss_jiio) >= float(loss_pgd) > float(loss_clean)


def test_jiio_counts_its_cell_evaluations_and_trains_a_deq() -> None:
    defense = spec("deq", "jiio", iterations=10)
    result = train_model(defense, "digits", load("digits", "train"), THREATS[0])
    assert result.recipe_settings["iterations"] == 10
    assert result.forward_evals > 0 and result.backward_evals > 0


def test_jiio_refuses_a_model_without_a_cell() -> None:
    from robustdeq.errors import RobustdeqError

    with pytest.raises(RobustdeqError, match="recipe jiio needs the deq model family"):
        train_model(spec("explicit", "jiio"), "digits", load("digits", "train"), THREATS[0])


def test_recipe_settings_are_validated() -> None:
    from robustdeq.errors import RobustdeqError

    for name in RECIPES:
        with pytest.raises(RobustdeqError, match="unknown field 'colour'"):
            RECIPES.get(name)({"colour": 1}, THREATS[0], "t")
    with pytest.raises(RobustdeqError, match="beta >= 0"):
        RECIPES.get("trades")({"beta": -1.0}, THREATS[0], "t")
    assert dataclasses.is_dataclass(RECIPES.get("jiio")({}, THREATS[0], "t"))


def test_jiio_switches_its_input_step_and_warm_starts_the_backward_adjoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from robustdeq.deq import equilibrium
    from robustdeq.records.defense import find_defense
    from robustdeq.training import build_model
    from robustdeq.training.jiio import JIIO
    from robustdeq.training.recipes import BatchNoise

    defense = find_defense("deq-jiio-l2")  # the paper's L2 setting
    torch.manual_seed(0)
    model = build_model(defense, "digits")
    recipe = JIIO("L2", 1.0, iterations=12, step_size=0.6, step_size_late=0.2, switch_at=5, warm_adjoint=True)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    found = recipe.perturb(model.eval(), x, y)
    assert found.step_sizes == [0.6] * 5 + [0.2] * (len(found.step_sizes) - 5)
    assert float((found.x_adv - x).flatten(1).norm(dim=1).max()) <= 1.0 + 1e-5
    starts: list[object] = []
    solve = equilibrium._adjoint_batch

    def recording(*args: object) -> object:
        starts.append(args[4])  # (layer, f, z, target, start, transposed)
        return solve(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(equilibrium, "_adjoint_batch", recording)
    model.train()
    recipe.loss(model, x, y, BatchNoise(torch.Generator().manual_seed(0), 8)).backward()
    assert len(starts) == 1 and isinstance(starts[0], torch.Tensor) and float(starts[0].abs().max()) > 0
    starts.clear()
    JIIO("L2", 1.0, iterations=12).loss(model, x, y, BatchNoise(torch.Generator().manual_seed(0), 8)).backward()
    assert starts == [None]
