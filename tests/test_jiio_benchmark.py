"""benchmarks/jiio_vs_pgd_at.py: repeated, interleaved timings with their spread, on a tiny budget
(the real run needs an idle machine and is run by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_benchmark


def module() -> ModuleType:
    return load_benchmark("jiio_vs_pgd_at")


def test_timings_are_interleaved_and_summarised_with_their_spread() -> None:
    bench = module()
    assert bench.interleaved(["a", "b"], 3) == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    s = bench.spread([2.0, 3.0, 4.0])
    assert s == {
        "seconds_per_epoch": 3.0,
        "seconds_per_epoch_min": 2.0,
        "seconds_per_epoch_max": 4.0,
        "seconds_per_epoch_runs": [2.0, 3.0, 4.0],
    }
    q = bench.ratio([2.0, 3.0, 4.0], [8.0, 10.0, 12.0])
    assert q["mean"] == pytest.approx(0.3) and q["low"] == pytest.approx(2 / 12) and q["high"] == pytest.approx(0.5)
    assert bench.default_out("digits-linf").name == "jiio_vs_pgd_at"
    assert bench.default_out("digits-l2").name == "jiio_vs_pgd_at-digits-l2"


def test_a_tiny_run_writes_repeated_timings_that_the_claims_read(tiny_protocol: Path, tmp_path: Path) -> None:
    from robustdeq.report.claims import Claim, benchmark_ratio

    bench = module()
    out = tmp_path / "results" / "jiio_vs_pgd_at"
    argv = ["--protocol", str(tiny_protocol), "--epochs", "1", "--train-subset", "64", "--n-examples", "8"]
    summary = bench.main([*argv, "--repeats", "3", "--jiio-iterations", "2", "--threads", "1", "--out", str(out)])
    written = json.loads(out.with_suffix(".json").read_text())
    assert written["repeats"] == 3 and written["first"] == "deq-jiio" and written["second"] == "deq-pgd-at"
    for name, recipe in (("deq-jiio", "jiio"), ("deq-pgd-at", "pgd_at")):
        r = written["results"][name]
        assert r["recipe"] == recipe and len(r["seconds_per_epoch_runs"]) == 3
        assert r["seconds_per_epoch_min"] <= r["seconds_per_epoch"] <= r["seconds_per_epoch_max"]
        assert "attack_cross_entropy" in r and 0 <= r["robust_accuracy"] <= r["clean_accuracy"] <= 1
    assert written["results"]["deq-jiio"]["recipe_settings"]["iterations"] == 2
    q = written["ratio_seconds_per_epoch"]
    assert q["low"] <= q["mean"] <= q["high"] and summary["ratio_seconds_per_epoch"] == q
    assert "spread over the repeats" in out.with_suffix(".md").read_text()
    claim = Claim(
        "c", "https://example.org", "JIIO is faster", (written["protocol"],), "deq-jiio", "deq-pgd-at",
        "train_seconds", "lower", 0.2, expected_ratio=0.33, benchmark="jiio_vs_pgd_at.json",
    )  # fmt: skip
    measured, why = benchmark_ratio(claim, out.parent)
    assert why == "" and measured is not None
    assert (measured.estimate, measured.low, measured.high, measured.repeats) == pytest.approx(
        (q["mean"], q["low"], q["high"], 3)
    )
