"""The ways a defense could look more robust than it is: one model built for each, and every flag fires.

Each broken model must end flagged and with a robust accuracy no higher than its honest twin's (the
same weights, attacked correctly), within two examples.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from robustdeq.data import load
from robustdeq.deq import SolverSpec, equilibria
from robustdeq.evaluation import evaluate
from robustdeq.evaluation import view as view_module
from robustdeq.evaluation.attacks import AUTOATTACK_FLAGS
from robustdeq.evaluation.runner import EvalResult, twin_depth
from robustdeq.models.deq import DEQClassifier
from robustdeq.pipeline import load_trained
from robustdeq.records.defense import DefenseSpec, ModelSpec, TrainSpec
from robustdeq.records.flags import FLAGS, kind, overestimates, status
from robustdeq.records.protocol import load_protocol
from robustdeq.threat import ThreatModel
from robustdeq.training import train_model

REPO = Path(__file__).resolve().parent.parent
N = 32
SLACK = 2 / N

BASE = """
id = "honesty"
version = 1
dataset = "digits"

[threat_model]
norm = "{norm}"
eps = {eps}

[subset]
n_examples = {n}

[evaluation]
batch_size = {n}
seed = 0
warm_start = true
votes = 3
eot_draws = 4
{extra}
"""

PGD = """
[[attacks]]
name = "pgd"
steps = {steps}
step_size = {step}
restarts = {restarts}
grad_modes = {modes}
"""

SQUARE = """
[[attacks]]
name = "square"
n_queries = {queries}
"""

TRANSFER = """
[[attacks]]
name = "transfer"
steps = 10
step_size = 0.05
"""

AUTOATTACK = """
[[attacks]]
name = "autoattack"
version = "custom"
attacks = ["apgd-ce", "square"]
n_iter = 10
n_queries = 50
"""


def protocol(tmp_path: Path, *attacks: str, norm: str = "Linf", eps: float = 0.2, extra: str = "", n: int = N) -> Any:
    path = tmp_path / f"honesty-{len(list(tmp_path.glob('*.toml')))}.toml"
    path.write_text(BASE.format(norm=norm, eps=eps, n=n, extra=extra) + "".join(attacks))
    return load_protocol(path)


def pgd(steps: int = 10, step: float = 0.05, restarts: int = 1, modes: tuple[str, ...] = ("ift",)) -> str:
    return PGD.format(steps=steps, step=step, restarts=restarts, modes=str(list(modes)).replace("'", '"'))


def build(cls: type[DEQClassifier], weights: dict[str, Tensor], solver: SolverSpec | None = None) -> DEQClassifier:
    model = cls((1, 8, 8), 10, solver or SolverSpec())
    model.load_state_dict(weights)
    return model.eval()


def run(model: nn.Module, spec: Any) -> EvalResult:
    return evaluate(model, spec, load("digits", "test"))


class Noisy(DEQClassifier):
    """A randomised defense: fresh uniform noise on the input at every call."""

    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        return super().forward((x + 0.15 * (2 * torch.rand_like(x) - 1)).clamp(0, 1))


class NaNGradient(DEQClassifier):
    """A finite forward whose input gradient is NaN (d sqrt(u) / du at u = 0 times zero)."""

    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        logits = super().forward(x)
        return logits + 0.0 * torch.sqrt(x - x).flatten(1).sum(1, keepdim=True)


class Caching(DEQClassifier):
    """Answers every query within eps (L-inf) of an input it saw before with that input's logits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[Tensor, Tensor]] = []

    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        fresh = super().forward(x)
        out = []
        for i in range(len(x)):
            hit = next((logits for seen, logits in self.seen if (seen - x[i]).abs().max() <= 0.2 + 1e-6), None)
            if hit is None:
                self.seen.append((x[i].detach().clone(), fresh[i].detach().clone()))
            out.append(fresh[i] if hit is None else hit + 0.0 * fresh[i])
        return torch.stack(out)


class WarmSensitive(DEQClassifier):
    """Behaves differently when it receives ``z_init`` (what a warm-starting attack passes)."""

    calls_with_state = 0

    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        logits = super().forward(x, z_init)
        if z_init is not None:
            WarmSensitive.calls_with_state += 1
            return logits.detach() * 100  # confidently right or wrong, and no gradient
        return logits


def test_a_randomised_model_is_flagged_and_attacked_with_eot_and_majority_votes(
    weights: dict[str, Tensor], tmp_path: Path
) -> None:
    spec = protocol(tmp_path, pgd(), AUTOATTACK)
    torch.manual_seed(0)
    result = run(build(Noisy, weights), spec)
    assert "randomized_model" in result.flags and kind("randomized_model", result.flags) == "informational"
    assert result.attack_settings["pgd"]["eot_draws"] == 4
    assert result.attack_settings["autoattack"]["eot_draws"] == 4
    # The same model attacked on single draws, one forward per prediction: EOT does not do worse.
    without = evaluate(build(Noisy, weights), _replace(spec, votes=1, eot_draws=1), load("digits", "test"))
    assert result.robust_accuracy <= without.robust_accuracy + SLACK


def _replace(spec: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(spec, **changes)


@pytest.mark.parametrize("norm, eps, step", [("Linf", 0.2, 0.05), ("L2", 1.0, 0.25)])
def test_nan_gradients_are_flagged_and_the_gradient_free_attacks_still_bite(
    weights: dict[str, Tensor], tmp_path: Path, norm: str, eps: float, step: float
) -> None:
    spec = protocol(tmp_path, pgd(step=step), SQUARE.format(queries=300), norm=norm, eps=eps)
    honest = run(build(DEQClassifier, weights), spec)
    broken = run(build(NaNGradient, weights), spec)
    assert "nonfinite_gradients" in broken.flags and "nonfinite_gradients" in overestimates(broken.flags)
    if norm == "L2":  # the NaN iterates fail verification: the entry says the attack produced none
        assert "invalid_adversarial_examples" in broken.flags
    assert broken.attack_accuracies()["square"] <= honest.attack_accuracies()["square"] + SLACK
    assert broken.robust_accuracy <= broken.attack_accuracies()["square"]


def test_a_caching_model_is_flagged_and_attacked_through_fresh_instances(
    weights: dict[str, Tensor], tmp_path: Path
) -> None:
    spec = protocol(tmp_path, pgd(), SQUARE.format(queries=200), n=16)
    honest = run(build(DEQClassifier, weights), spec)
    cached = run(build(Caching, weights), spec)
    assert "stateful_model" in cached.flags and status(cached.flags) == "overestimate"
    assert cached.robust_accuracy <= honest.robust_accuracy + 2 / 16


def test_a_submitted_model_never_receives_a_warm_start(weights: dict[str, Tensor], tmp_path: Path) -> None:
    spec = protocol(tmp_path, pgd())
    WarmSensitive.calls_with_state = 0
    sneaky = run(build(WarmSensitive, weights), spec)
    honest = run(build(DEQClassifier, weights), spec)
    assert WarmSensitive.calls_with_state == 0
    assert sneaky.robust.tolist() == honest.robust.tolist()


def test_pgd_holds_an_example_only_on_the_fixed_points_prediction(
    weights: dict[str, Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, bool]] = []
    forward = view_module.AttackView.forward

    def recording(self: Any, x: Tensor) -> Tensor:
        layers = equilibria(self.model)
        seen.append((layers[0].active_grad_mode, self.labels is not None))
        return forward(self, x)

    monkeypatch.setattr(view_module.AttackView, "forward", recording)
    run(build(DEQClassifier, weights), protocol(tmp_path, pgd(steps=3, modes=("ift", "states", "unroll"))))
    holds = {mode: held for mode, held in seen}
    assert holds == {"ift": True, "states": False, "unroll": False}


def test_the_check_flags_fire_on_models_built_for_them(weights: dict[str, Tensor], tmp_path: Path) -> None:
    # Twice the steps of a 2-step PGD with a tiny step finds far more.
    weak = protocol(tmp_path, pgd(steps=2, step=0.02), extra='\n[checks]\nmore_iterations = "pgd"\n')
    assert "more_iterations_stronger" in run(build(DEQClassifier, weights), weak).flags
    # A solver stopped after 3 plain steps: twice the iterations change the predictions.
    short = SolverSpec(f_solver="fixed_point_iter", f_max_iter=3, b_max_iter=3)
    budget = protocol(tmp_path, pgd(steps=3), extra='\n[checks]\nsolver_budget = "pgd"\n')
    assert "solver_budget_sensitive" in run(build(DEQClassifier, weights, short), budget).flags
    # Attacked with the phantom gradient only.
    phantom = SolverSpec(attack_grad="phantom")
    approx = protocol(tmp_path, pgd(steps=3, modes=("phantom",)))
    assert "approximate_attack_gradient" in _entry_flags(build(DEQClassifier, weights, phantom), approx)


class Masked(DEQClassifier):
    """Correct outputs, a gradient that points nowhere useful: the white-box attacks are blind."""

    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        logits = super().forward(x.detach())
        return logits + 0.0 * x.flatten(1).sum(1, keepdim=True)


def test_transfer_and_square_beating_the_white_box_attacks_are_flagged(
    weights: dict[str, Tensor], tmp_path: Path
) -> None:
    spec = protocol(tmp_path, pgd(), TRANSFER, SQUARE.format(queries=400))
    result = run(build(Masked, weights), spec)
    assert {"transfer_stronger_than_whitebox", "square_stronger_than_whitebox", "zero_gradients"} <= set(result.flags)


def test_runner_paths_the_protocols_use(weights: dict[str, Tensor], tmp_path: Path) -> None:
    """L2 threat model, PGD restarts, standalone Square, phantom and states modes, AutoAttack standard."""
    model = build(DEQClassifier, weights)
    spec = protocol(
        tmp_path, pgd(steps=5, step=0.25, restarts=2, modes=("ift", "phantom", "states")), SQUARE.format(queries=50),
        norm="L2", eps=1.0, n=16,
    )  # fmt: skip
    result = run(model, spec)
    assert {"pgd", "pgd@phantom", "pgd@states", "square"} == set(result.attack_correct)
    assert result.attack_settings["pgd"]["restarts"] == 2
    assert result.robust_accuracy <= min(result.attack_accuracies().values())
    standard = protocol(tmp_path, '[[attacks]]\nname = "autoattack"\nversion = "standard"\n', n=4)
    explicit = _cnn()
    result = run(explicit, standard)
    assert result.attack_settings["autoattack"]["version"] == "standard"
    assert result.robust_accuracy <= result.clean_accuracy


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    spec = DefenseSpec("cnn", "cnn", ModelSpec("explicit", {}), TrainSpec(epochs=1, train_subset=200))
    return train_model(spec, "digits", load("digits", "train"), ThreatModel("Linf", 0.2)).model.eval()


def _entry_flags(model: nn.Module, spec: Any) -> list[str]:
    from robustdeq.pipeline import Budget, TrainedModel, make_entry

    result = evaluate(model, spec, load("digits", "test"))
    defense = DefenseSpec("d", "d", ModelSpec("deq"), TrainSpec(), SolverSpec())
    return list(make_entry(defense, spec, TrainedModel(model, None, 0.0), result, Budget())["flags"])


def test_nonstandard_runs_are_flagged_and_recorded(weights: dict[str, Tensor], tmp_path: Path) -> None:
    from robustdeq.pipeline import Budget, TrainedModel, make_entry

    spec = protocol(tmp_path, pgd(steps=2))
    model = build(DEQClassifier, weights)
    defense = DefenseSpec("d", "d", ModelSpec("deq"), TrainSpec(), SolverSpec())
    for budget, recorded in (
        (Budget(batch_size=8), {"batch_size": 8}),
        (Budget(eps_sweep=(0.1,)), {"eps_sweep": [0.1]}),
    ):
        result = evaluate(model, _replace(spec, eps_sweep=budget.eps_sweep or ()), load("digits", "test"),
                          batch_size=budget.batch_size)  # fmt: skip
        entry = make_entry(defense, spec, TrainedModel(model, None, 0.0), result, budget)
        assert "nonstandard_run" in entry["flags"] and entry["provenance"]["nonstandard"] == recorded
        assert status(entry["flags"]) == "not-comparable"


def test_every_flag_is_documented_classified_and_autoattacks_warnings_still_exist() -> None:
    flags_section = (REPO / "docs" / "entry.md").read_text().split("## Flags", 1)[1]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", flags_section, flags=re.M))
    assert documented == set(FLAGS), (sorted(set(FLAGS) - documented), sorted(documented - set(FLAGS)))
    import pyautoattack.checks

    source = inspect.getsource(pyautoattack.checks)
    missing = [needle for needle in AUTOATTACK_FLAGS if needle not in source]
    assert not missing, f"pyautoattack no longer warns with {missing}: update AUTOATTACK_FLAGS"
    assert set(AUTOATTACK_FLAGS.values()) <= set(FLAGS)
    assert (
        kind("autoattack_dynamic_defense", ["autoattack_dynamic_defense", "test_time_optimisation"]) == "informational"
    )
    assert kind("autoattack_dynamic_defense", ["autoattack_dynamic_defense"]) == "overestimate"


def test_the_transfer_twins_depth_is_fixed_by_the_model_not_by_what_ran_last(
    weights: dict[str, Tensor], tmp_path: Path
) -> None:
    """The depth comes from the cold clean solves of the evaluation (or a fixed-budget readout's own
    budget) and is recorded; an unrelated forward before the evaluation does not move it."""
    spec = protocol(tmp_path, pgd(steps=2), TRANSFER, n=16)
    fresh = run(build(DEQClassifier, weights), spec).attack_settings["transfer"]["depth"]
    model = build(DEQClassifier, weights)
    with torch.no_grad():
        model(torch.rand(16, 1, 8, 8) * 50)  # far off the data: many more solver steps
    after = run(model, spec).attack_settings["transfer"]["depth"]
    assert fresh == after and fresh >= 1
    _, trained = load_trained("zoo:digits-linf/lyadeq-standard", "cpu")
    assert twin_depth(trained.model, None) == trained.model.steps  # type: ignore[arg-type]
