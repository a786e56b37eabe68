"""The MNIST path cannot rot: every MNIST-tier reference defense trains its MNIST variant
(``[datasets.mnist]``) on a few MNIST images from ``../shared/data``, saves its per-epoch training state
and is rebuilt from it (tests/test_cli.py runs ``bench`` on MNIST end to end; nothing is written to the
committed leaderboards). The full tier is ``robustdeq bench --protocol mnist-linf-0.3`` (README)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from robustdeq.data import Split, load
from robustdeq.models.entropy import EntropyReduced
from robustdeq.pipeline import Budget, train_defense
from robustdeq.records.defense import find_defense, list_defenses
from robustdeq.records.protocol import find_protocol
from robustdeq.training.resume import TrainingState, training_key
from robustdeq.training.trainer import build_model

MNIST_TIER = [name for name in list_defenses(suite="all") if "mnist" in find_defense(name).datasets]


def test_the_mnist_tier_has_its_eleven_defenses() -> None:
    assert len(MNIST_TIER) == 11 and {"deq-pgd-at", "lyadeq-trades", "deq-pgd-at-er", "deq-jiio"} <= set(MNIST_TIER)


@pytest.fixture(scope="module")
def mnist_train(shared_data: Path) -> Split:
    return load("mnist", "train", shared_data, False)  # once: reading 60,000 images takes seconds


@pytest.mark.parametrize("name", MNIST_TIER)
def test_each_mnist_variant_trains_and_resumes_from_its_saved_state(
    name: str, mnist_train: Split, tmp_path: Path
) -> None:
    protocol = find_protocol("mnist-linf-0.3")
    defense = find_defense(name)
    variant = defense.on("mnist")
    state = tmp_path / "state.safetensors"
    budget = Budget(epochs=1, train_subset=16)
    result, record = train_defense(defense, protocol, mnist_train, budget, resume=state)
    assert record["epochs"] == 1 and record.get("eps_warmup_epochs", 0.0) == variant.train.eps_warmup_epochs
    # the saved state restores into a fresh model of the variant: the weights training ended with
    spec = dataclasses.replace(variant.train, epochs=1, train_subset=16)
    key = training_key(variant, "mnist", spec, protocol.threat, torch.device("cpu"))
    fresh = build_model(defense, "mnist")
    trainee = fresh.base if isinstance(fresh, EntropyReduced) else fresh  # the loop is not trained
    done, _ = TrainingState(state, key).restore(trainee, torch.optim.Adam(trainee.parameters()), {})
    assert done == 1
    for a, b in zip(result.model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
