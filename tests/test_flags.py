"""Flags that can fire where they are claimed: each of these under the shipped digits-linf protocol
(its first 16 examples), and a test that fails when a flag of ``flags.py`` is asserted in no test.

(tests/test_honesty.py builds models for the other flags.)"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from robustdeq.data import load
from robustdeq.evaluation import evaluate
from robustdeq.evaluation.attacks import ATTACKS
from robustdeq.evaluation.runner import EvalResult
from robustdeq.pipeline import Budget, TrainedModel, load_trained, make_entry
from robustdeq.records.defense import DefenseSpec, ModelSpec, TrainSpec
from robustdeq.records.flags import FLAGS, kind
from robustdeq.records.protocol import find_protocol
from robustdeq.threat import ThreatModel
from robustdeq.training import train_model

TESTS = Path(__file__).resolve().parent


def shipped(n: int = 16) -> object:
    return dataclasses.replace(find_protocol("digits-linf"), n_examples=n)


def run(model: nn.Module) -> EvalResult:
    return evaluate(model, shipped(), load("digits", "test"))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    spec = DefenseSpec("cnn", "cnn", ModelSpec("explicit", {}), TrainSpec(epochs=1, train_subset=200))
    return train_model(spec, "digits", load("digits", "train"), ThreatModel("Linf", 0.2)).model.eval()


class Masked(nn.Module):
    """Right answers, zero input gradient: the gradient attacks are blind, Square is not."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x.detach()) + 0.0 * x.flatten(1).sum(1, keepdim=True)
        return out


class OffGridNaN(Masked):
    """NaN logits on any input off the digits' grid of sixteenths, i.e. on every perturbed input."""

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.inner(x)
        off = ((x * 16 - (x * 16).round()).abs() > 1e-4).flatten(1).any(1, keepdim=True)
        return torch.where(off, torch.full_like(logits, float("nan")), logits)


def test_square_beating_the_gradient_attacks_fires_beside_autoattack(cnn: nn.Module) -> None:
    """AutoAttack runs Square itself, so it is no white-box reference for Square: with it in the
    protocol the flag still fires on a gradient-masked model, and so does AutoAttack's own warning."""
    flags = run(Masked(cnn)).flags
    assert {"square_stronger_than_whitebox", "autoattack_square_beats_whitebox", "zero_gradients"} <= set(flags)


def test_nonfinite_logits_fire(cnn: nn.Module) -> None:
    result = run(OffGridNaN(cnn))
    assert "nonfinite_logits" in result.flags and kind("nonfinite_logits", result.flags) == "overestimate"
    assert result.robust_accuracy == 0.0  # a NaN answer is never a correct one


def test_a_fixed_readout_budget_gets_the_readout_check_not_the_solver_check() -> None:
    _, trained = load_trained("zoo:digits-linf/lyadeq-standard", "cpu")
    model = trained.model.eval()
    model.readout_budget = 1  # read out after one step: twice that changes the predictions
    result = run(model)
    assert (
        "readout_budget_sensitive" in result.flags and kind("readout_budget_sensitive", result.flags) == "informational"
    )
    assert {"clean-readout-2x", "pgd-readout-2x"} <= set(result.checks)
    assert not [k for k in result.checks if "solver" in k]
    assert "solver_budget_sensitive" not in result.flags


def test_autoattack_n_classes_fires_on_a_two_class_problem() -> None:
    """No shipped data set has fewer than 10 classes, so this flag cannot fire under a shipped protocol;
    AutoAttack's targeted attacks need 9 target classes, which a two-class model lacks."""
    test = load("digits", "test")
    keep = test.y < 2
    x, y = test.x[keep][:8], test.y[keep][:8]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    attack = ATTACKS.get("autoattack")(ThreatModel("Linf", 0.2), {"version": "standard"}, 0, 8, "test")
    attack.perturb(model, x, y)
    assert attack.flags == ["autoattack_n_classes"]


class DeclaresALoop(Masked):
    """A submitted model declaring its own "adaptive" loop gradient, one that does nothing."""

    loop_gradients = ("noop",)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x)
        return out

    @contextmanager
    def loop_gradient_mode(self, mode: str) -> Iterator[None]:
        yield


def test_a_submitted_model_cannot_choose_its_attack(cnn: nn.Module) -> None:
    """Its declared loop gradient is one more run beside the runs through the model as written; it gets
    no test_time_optimisation flag, so AutoAttack's dynamic-defense warning would stay an overestimate."""
    model = DeclaresALoop(cnn)
    result = run(model)
    assert {"pgd", "pgd+declared-noop", "pgd-margin", "autoattack", "square"} <= set(result.attack_correct)
    defense = DefenseSpec("d", "d", ModelSpec("explicit"), TrainSpec())
    flags = make_entry(defense, shipped(), TrainedModel(model, None, 0.0), result, Budget())["flags"]  # type: ignore[arg-type]
    assert "test_time_optimisation" not in flags
    assert kind("autoattack_dynamic_defense", flags) == "overestimate"


def asserted_flags() -> set[str]:
    """Flag names that appear inside an ``assert`` statement of some test module, or in the
    ``pytest.mark.parametrize`` values of a test (which asserts on its parameter)."""
    found: set[str] = set()
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            texts = [ast.unparse(node)] if isinstance(node, ast.Assert) else []
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                texts += [ast.unparse(d) for d in node.decorator_list if "parametrize" in ast.unparse(d)]
            found.update(name for name in FLAGS for text in texts if f"'{name}'" in text)
    return found


def test_every_flag_is_asserted_by_some_test() -> None:
    missing = sorted(set(FLAGS) - asserted_flags())
    assert not missing, f"flags that no test asserts: {missing}"
