"""benchmarks/mnist_throughput.py: the projection prices each tier entry at its family's timed defense,
the tier's own model where it was timed, else the timing model scaled by the tier / timing ratio; the
committed summary is what its own numbers give."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_benchmark

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("mnist_throughput")


def test_the_projection_prices_by_the_tier_model_where_timed_else_the_scaled_timing_model(bench: ModuleType) -> None:
    timed = {
        "deq-pgd-at": {"seconds_per_example": 2.0},
        "deq-pgd-at (tier)": {"seconds_per_example": 6.0},
        "cnn-pgd-at": {"seconds_per_example": 1.0},
        "lyadeq-trades": {"seconds_per_example": 10.0},
    }
    p = bench.projection(timed)
    assert p["timing_to_tier_ratio"] == 3.0
    hours = p["1000"]["per_entry_hours"]
    assert hours["deq-trades"] == round(6.0 * 1000 / 3600, 2)  # the tier's deq-pgd-at
    assert hours["cnn-standard"] == round(1.0 * 3.0 * 1000 / 3600, 2)  # the timing model, scaled
    assert hours["lyadeq-standard"] == round(10.0 * 3.0 * 1000 / 3600, 2)
    assert "deq-pgd-at-er" not in hours and p["1000"]["priced"] == 10  # nothing timed for it
    assert p["500"]["core_hours"] == pytest.approx(p["1000"]["core_hours"] / 2, abs=0.1)


def test_a_tier_model_timed_at_the_protocol_batch_prices_its_family_and_scales_the_others(bench: ModuleType) -> None:
    timed = {
        "deq-pgd-at": {"seconds_per_example": 2.0},
        "deq-pgd-at (tier)": {"seconds_per_example": 6.0},
        "deq-pgd-at (tier, batch)": {"seconds_per_example": 3.0},
        "cnn-pgd-at": {"seconds_per_example": 1.0},
        "cnn-pgd-at (tier)": {"seconds_per_example": 3.0},
        "lyadeq-trades": {"seconds_per_example": 10.0},
    }
    p = bench.projection(timed)
    assert p["timing_to_tier_ratio"] == 3.0 and p["batch_to_small_ratio"] == 0.5
    hours = p["1000"]["per_entry_hours"]
    assert hours["deq-trades"] == round(3.0 * 1000 / 3600, 2)  # the tier's deq-pgd-at at the batch size
    assert hours["cnn-standard"] == round(3.0 * 0.5 * 1000 / 3600, 2)  # the tier's cnn, scaled to the batch
    assert hours["lyadeq-trades"] == round(10.0 * 3.0 * 0.5 * 1000 / 3600, 2)  # timing model, both scales
    assert p["basis"]["lyadeq-trades"] == "lyadeq-trades x 1.50"


def test_the_committed_summary_is_what_its_numbers_give(bench: ModuleType) -> None:
    result = json.loads((REPO / "benchmarks" / "results" / "mnist_throughput.json").read_text())
    assert bench.projection(result["timed"]) == result["projection"]
    assert (REPO / "benchmarks" / "results" / "mnist_throughput.md").read_text() == bench.markdown(result)


def test_the_note_is_kept_out_of_the_command(bench: ModuleType) -> None:
    assert bench.without_note(["--data-dir", "d", "--note", "busy", "--n-examples", "4"]) == [
        "--data-dir", "d", "--n-examples", "4",
    ]  # fmt: skip
