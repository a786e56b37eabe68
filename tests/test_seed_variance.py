"""benchmarks/seed_variance.py: its summary helpers, and that it starts (it is run by hand, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from robustdeq.records.defense import find_defense
from tests.conftest import load_benchmark

REPO = Path(__file__).resolve().parent.parent


def module() -> ModuleType:
    return load_benchmark("seed_variance")


def test_spread_and_summary_of_accuracies_across_seeds() -> None:
    sv = module()
    s = sv.spread([0.44, 0.46, 0.48], 100)
    assert s["min"] == 0.44 and s["max"] == 0.48
    assert s["mean"] == pytest.approx(0.46) and s["std"] == pytest.approx(0.02)
    assert s["wilson_half_width"] == pytest.approx((0.557351 - 0.365608) / 2, abs=1e-6)
    assert sv.spread([0.5], 100)["std"] == 0.0
    runs = {"d": {seed: {"n_examples": 100, "clean_accuracy": c, "robust_accuracy": r}
                  for seed, c, r in ((0, 0.9, 0.46), (1, 0.88, 0.44), (2, 0.92, 0.48))}}  # fmt: skip
    summary = sv.summarise(runs)
    assert summary["d"]["seeds"] == [0, 1, 2] and summary["d"]["robust_accuracy"]["std"] == pytest.approx(0.02)
    text = sv.markdown(summary, "digits-linf", "header")
    assert "| d | 0, 1, 2 | 100 | 88.0 / 90.0 / 92.0 | 2.0 | 6.0 | 44.0 / 46.0 / 48.0 | 2.0 | 9.6 |" in text
    runs["d"][3] = {"n_examples": 50, "clean_accuracy": 0.9, "robust_accuracy": 0.4}
    with pytest.raises(ValueError, match="different numbers of examples"):
        sv.summarise(runs)


def test_seeded_replaces_only_the_training_seed() -> None:
    defense = find_defense("deq-pgd-at")
    other = module().seeded(defense, 7)
    assert other.train.seed == 7 and other.train.epochs == defense.train.epochs and other.id == defense.id


def test_help_works() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/seed_variance.py", "--help"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "--seeds" in result.stdout, result.stderr


def test_the_leaderboards_seeds_file_is_the_committed_summary_recorded(tmp_path: Path) -> None:
    """``leaderboards/digits-linf/seeds.json`` is what ``--record benchmarks/results/seed_variance.json``
    writes: each defense with the protocol version its seeds were measured under."""
    results = json.loads((REPO / "benchmarks" / "results" / "seed_variance.json").read_text())
    path = module().record(results, tmp_path)
    assert path == tmp_path / "digits-linf" / "seeds.json"
    assert path.read_text() == (REPO / "leaderboards" / "digits-linf" / "seeds.json").read_text()
    assert json.loads(path.read_text())["defenses"]["deq-pgd-at"]["protocol_version"] == results["protocol_version"]
