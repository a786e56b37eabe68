"""The training-seed spread of a protocol's defenses: ``<protocol>/seeds.json``, beside the entries."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest

from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard import read_entries, write_entry
from robustdeq.records.store import read_seeds, record_seeds
from tests.test_site import site_entries


def spread(robust: list[float], clean: float = 1.0, version: int = 1, protocol_hash: str = "ab" * 32) -> dict[str, Any]:
    """A defense's seed spread as ``seeds.json`` records it: seeds 0, 1, ... with these robust accuracies."""
    seeds = list(range(len(robust)))

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "min": min(values),
            "mean": statistics.fmean(values),
            "max": max(values),
            "std": statistics.stdev(values),
            "wilson_half_width": 0.095,
        }

    return {
        "protocol_version": version,
        "protocol_hash": protocol_hash,
        "n_examples": 100,
        "seeds": seeds,
        "per_seed": {
            str(s): {"clean_accuracy": clean, "robust_accuracy": r} for s, r in zip(seeds, robust, strict=True)
        },
        "clean_accuracy": stats([clean] * len(robust)),
        "robust_accuracy": stats(robust),
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Protocol ``p``'s entries (those of the site's tests); alpha's seeds measured under protocol version 0,
    beta's under the entries' own version, none for the others."""
    for e in site_entries():
        write_entry(tmp_path / "lb", e)
    record_seeds(tmp_path / "lb" / "p", {"alpha": spread([0.55, 0.61, 0.58], version=0, protocol_hash="cd" * 32)})
    record_seeds(tmp_path / "lb" / "p", {"beta": spread([0.5, 0.59, 0.55])})  # alpha's is kept
    return tmp_path / "lb" / "p"


def test_seeds_json_lies_beside_the_entries_but_is_not_one(folder: Path) -> None:
    assert [e["defense"] for e in read_entries(folder)] == ["alpha", "beta", "delta", "epsilon", "gamma"]
    seeds = read_seeds(folder)
    assert seeds is not None and list(seeds["defenses"]) == ["alpha", "beta"]  # recording beta kept alpha


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(seeds=[0, 1]), "per_seed must hold exactly the seeds"),
        (lambda s: s.update(seeds=[2, 1, 0]), "distinct, in increasing order"),
        (lambda s: s["robust_accuracy"].update(max=0.7), "min and max must be the seeds'"),
        (lambda s: s["per_seed"]["1"].update(robust_accuracy=1.5), "must be in"),
        (lambda s: s.pop("protocol_version"), "missing key 'protocol_version'"),
    ],
)
def test_a_seed_spread_that_contradicts_itself_is_refused(tmp_path: Path, change: Any, message: str) -> None:
    bad = spread([0.4, 0.5, 0.45])
    change(bad)
    with pytest.raises(RobustdeqError, match=message):
        record_seeds(tmp_path / "p", {"d": bad})
    assert not (tmp_path / "p" / "seeds.json").exists()


def test_the_seeds_of_another_protocol_are_refused(tmp_path: Path) -> None:
    record_seeds(tmp_path / "p", {"d": spread([0.4, 0.5])})
    (tmp_path / "p" / "seeds.json").rename(tmp_path / "seeds.json")
    (tmp_path / "q").mkdir()
    (tmp_path / "seeds.json").rename(tmp_path / "q" / "seeds.json")
    with pytest.raises(RobustdeqError, match="the seeds of protocol 'p' in the folder of 'q'"):
        read_seeds(tmp_path / "q")
    assert read_seeds(tmp_path / "p") is None
