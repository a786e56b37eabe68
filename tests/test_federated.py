"""The federated recipe: equivalence with centralised training, fusion, budgets, partitions, entries."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from robustdeq.data import load
from robustdeq.deq import equilibria
from robustdeq.errors import RobustdeqError
from robustdeq.records.defense import DefenseSpec, find_defense
from robustdeq.records.entry import validate_entry
from robustdeq.records.protocol import find_protocol
from robustdeq.threat import ThreatModel
from robustdeq.training import RECIPES, train_model
from robustdeq.training.federated import fuse, fusion_weights, partition

PROTOCOL = find_protocol("digits-linf")


@pytest.fixture(scope="module")
def train_split() -> Any:
    return load("digits", "train")


def _spec(base: str, recipe: str, epochs: int, settings: dict[str, Any], subset: int = 128) -> DefenseSpec:
    defense = find_defense(base)
    train = dataclasses.replace(
        defense.train, recipe=recipe, epochs=epochs, recipe_settings=settings, train_subset=subset
    )
    return dataclasses.replace(defense, train=train)


@pytest.mark.parametrize("local", ["standard", "pgd_at"])
def test_one_client_one_round_is_centralised_training(train_split: Any, local: str) -> None:
    local_settings = {"steps": 2} if local == "pgd_at" else {}
    central = _spec("deq-standard", local, 2, local_settings)
    federated = _spec(
        "deq-standard",
        "federated",
        1,
        {"clients": 1, "local_epochs": 2, "local_recipe": local, local: local_settings},
    )
    a = train_model(central, "digits", train_split, PROTOCOL.threat)
    b = train_model(federated, "digits", train_split, PROTOCOL.threat)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert b.federated is not None and b.federated["rounds"][0]["weights"] == [1.0]


def test_fusion_weights_follow_the_documented_formula() -> None:
    sizes, quality = [100, 300, 50, 50], [0.9, 0.5, 0.8, 0.0]
    fedavg = fusion_weights(sizes, quality, "fedavg")
    assert sum(fedavg) == pytest.approx(1.0)
    assert fedavg == pytest.approx([0.2, 0.6, 0.1, 0.1])
    weighted = fusion_weights(sizes, quality, "quality")
    scores = [90.0, 150.0, 40.0, 0.0]
    assert sum(weighted) == pytest.approx(1.0)
    assert weighted == pytest.approx([s / sum(scores) for s in scores])
    assert weighted[1] < fedavg[1] and weighted[3] == 0.0
    # equal qualities: FedAvg; all zero: FedAvg, not a division by zero
    assert fusion_weights(sizes, [0.7] * 4, "quality") == pytest.approx(fedavg)
    assert fusion_weights(sizes, [0.0] * 4, "quality") == pytest.approx(fedavg)


def test_fuse_averages_floats_and_takes_integers_from_the_heaviest_client() -> None:
    states = [
        {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)},
        {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)},
    ]
    fused = fuse(states, [0.25, 0.75])
    assert torch.allclose(fused["w"], torch.tensor([2.5, 5.0]))
    assert int(fused["n"]) == 7


def test_partitions_cover_every_example_once() -> None:
    y = torch.arange(10).repeat_interleave(30)
    for scheme in ("iid", "label_skew"):
        parts = partition(y, 4, scheme, 2, torch.Generator().manual_seed(0))
        joined = torch.cat(parts).sort().values
        assert torch.equal(joined, torch.arange(len(y))), scheme
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    skewed = partition(y, 4, "label_skew", 2, torch.Generator().manual_seed(0))
    iid = partition(y, 4, "iid", 2, torch.Generator().manual_seed(0))
    # 8 shards of 37-38 examples over classes of 30: a shard spans at most 3 labels
    assert all(len(set(y[p].tolist())) <= 6 for p in skewed)
    assert all(len(set(y[p].tolist())) == 10 for p in iid)


def test_heterogeneous_solver_budgets_are_used(train_split: Any) -> None:
    spec = _spec(
        "deq-standard",
        "federated",
        2,
        {"clients": 2, "client_max_iter": [40, 3], "fusion": "quality", "validation_fraction": 0.25},
        subset=160,
    )
    result = train_model(spec, "digits", train_split, PROTOCOL.threat)
    assert result.federated is not None
    rounds = result.federated["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert record["client_max_iter"] == [40, 3]
        full, capped = record["client_evals_per_forward"]
        # a capped solve: the start evaluation + 3 steps + the IFT re-evaluation of the cell
        assert capped <= 3 + 2 < full
        assert sum(record["weights"]) == pytest.approx(1.0)
        assert all(q is not None and 0.0 <= q <= 1.0 for q in record["client_quality"])
        assert record["bytes_to_clients"] == record["bytes_to_server"] > 0
    # the caps are lifted after training: the fused model solves with the manifest's budget
    assert [layer.spec.f_max_iter for layer in equilibria(result.model)] == [40]


def test_manifest_errors_are_one_line() -> None:
    threat = ThreatModel("Linf", 0.2)
    make = RECIPES.get("federated")
    with pytest.raises(RobustdeqError, match="one budget per client"):
        make({"clients": 3, "client_max_iter": [10, 5]}, threat, "t")
    with pytest.raises(RobustdeqError, match="validation_fraction > 0"):
        make({"fusion": "quality", "validation_fraction": 0.0}, threat, "t")
    with pytest.raises(RobustdeqError, match="partition"):
        make({"partition": "dirichlet"}, threat, "t")
    with pytest.raises(RobustdeqError, match="unknown field"):
        make({"local_recipe": "pgd_at", "pgd_at": {"stepz": 3}}, threat, "t")


def test_entry_schema_takes_the_federated_record(tmp_path: Any) -> None:
    import json
    from pathlib import Path

    entry = json.loads(Path("leaderboards/digits-linf/deq-standard.json").read_text())
    validate_entry(entry)  # no federated key: fine
    round_record = {
        "round": 1,
        "weights": [0.5, 0.5],
        "client_quality": [0.9, None],
        "client_max_iter": [40, 4],
        "client_evals_per_forward": [12.0, 6.0],
        "bytes_to_clients": 10,
        "bytes_to_server": 10,
        "clean_accuracy": 0.9,
        "pgd_accuracy": None,
    }
    entry["federated"] = {
        "fusion": "fedavg",
        "clients": 2,
        "client_examples": [5, 5],
        "client_labels": [[0], [1]],
        "monitor": "none",
        "rounds": [round_record],
    }
    validate_entry(entry)
    del entry["federated"]["rounds"][0]["weights"]
    with pytest.raises(RobustdeqError, match="weights"):
        validate_entry(entry)
