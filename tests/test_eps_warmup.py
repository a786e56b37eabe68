"""``[train] eps_warmup_epochs``: the training attack's eps (and step sizes) ramp linearly from 0 to
the full ball over the first epochs, batch by batch (PGD-AT at MNIST's eps 0.3 from the first batch
leaves a small model at chance), wrapped recipes included, and nothing changes without it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from robustdeq.records.defense import TrainSpec
from robustdeq.training.base import BatchNoise, ramped
from robustdeq.training.loop import run_epochs
from robustdeq.training.recipes import PGDAT, RandomStates, Standard


@dataclass(frozen=True)
class Recording:
    eps: float
    step_size: float
    seen: list[tuple[float, float]] = field(default_factory=list, compare=False)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, noise: BatchNoise) -> Tensor:
        self.seen.append((self.eps, self.step_size))
        return nn.functional.cross_entropy(model(x), y)

    def settings(self) -> dict[str, Any]:
        return {}


def train(warmup: float, epochs: int = 2) -> list[tuple[float, float]]:
    seen: list[tuple[float, float]] = []
    recipe = Recording(0.3, 0.1, seen)
    spec = TrainSpec(recipe="recording", epochs=epochs, batch_size=2, eps_warmup_epochs=warmup)
    x, y = torch.rand(8, 3), torch.arange(8) % 2
    run_epochs(nn.Linear(3, 2), recipe, x, y, spec, epochs, 0, lambda n: None)
    return seen


def test_the_ramp_rises_batch_by_batch_then_holds_the_full_ball() -> None:
    seen = train(warmup=1.0)  # 4 batches an epoch
    assert [round(eps, 6) for eps, _ in seen] == [0.075, 0.15, 0.225, 0.3, 0.3, 0.3, 0.3, 0.3]
    assert [round(step, 6) for _, step in seen] == [0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.1]


def test_without_a_warmup_every_batch_sees_the_full_ball() -> None:
    assert set(train(warmup=0.0)) == {(0.3, 0.1)}


def test_a_wrapped_recipe_is_ramped_and_a_recipe_without_an_attack_is_left_alone() -> None:
    base = PGDAT("Linf", 0.3, 7, 0.1, True)
    wrapped = ramped(RandomStates(base, "pgd_at", 1, 8), 0.5)
    assert isinstance(wrapped, RandomStates) and isinstance(wrapped.base, PGDAT)
    assert (wrapped.base.eps, wrapped.base.step_size, wrapped.base.steps) == (
        pytest.approx(0.15),
        pytest.approx(0.05),
        7,
    )
    standard = Standard()
    assert ramped(standard, 0.5) is standard and ramped(base, 1.0) is base


def test_the_training_record_names_a_warmup_only_when_there_is_one() -> None:
    assert "eps_warmup_epochs" not in TrainSpec().to_dict()
    assert TrainSpec(eps_warmup_epochs=1.0).to_dict()["eps_warmup_epochs"] == 1.0
