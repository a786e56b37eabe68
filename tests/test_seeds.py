"""The training-seed spread beside the interval: ``<protocol>/seeds.json`` read by the tables, the
site's table and its entry pages, saying which protocol version it was measured under."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest

from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard import read_entries, render, write_entry
from robustdeq.leaderboard.site import write_site
from robustdeq.records.store import read_seeds, record_seeds
from robustdeq.report.build import write_report
from tests.test_render import markdown_tables
from tests.test_site import cells, site_entries


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


def test_the_table_shows_the_seed_spread_beside_the_interval_and_where_it_was_measured(folder: Path) -> None:
    md, csv, page = render(read_entries(folder), folder)
    text = md.read_text()
    head = markdown_tables(text)[0]
    robust = {row.split("|")[3].strip(): row.split("|")[7].strip() for row in text.splitlines() if "](#" in row}
    assert head[6] == "robust % [95% CI]"
    assert robust["[alpha](#alpha) †"] == "60.0 [50.2, 69.1]; seeds 0-2: 55.0-61.0, sd 3.0 (protocol v0)"
    assert robust["[beta](#beta)"].endswith("]; seeds 0-2: 50.0-59.0, sd 4.5")  # measured as the entry was
    assert robust["[gamma](#gamma)"] == "30.0 [21.9, 39.6]"
    assert "- **seeds a-b: low-high, sd s** after a robust accuracy:" in text
    assert "Training seeds (seeds 0-2, `benchmarks/seed_variance.py`; measured under protocol v0, not as" in text
    assert "clean / robust %: seed 0 100.0 / 55.0, seed 1 100.0 / 61.0, seed 2 100.0 / 58.0." in text
    header = csv.read_text().splitlines()[0]
    assert "seeds,seeds robust min %,seeds robust max %,seeds robust sd %,seeds protocol version" in header
    assert "seeds 0-2: 55.0-61.0, sd 3.0 (protocol v0)</td>" in page.read_text()


def test_the_site_shows_the_seed_spread_in_the_table_and_on_the_entry_page(folder: Path, tmp_path: Path) -> None:
    write_site(folder.parent, tmp_path / "site")
    table = (tmp_path / "site" / "p" / "index.html").read_text()
    rows = cells(table)
    assert rows["alpha"][6] == "60.0 [50.2, 69.1]seeds 0-2: 55.0-61.0, sd 3.0 (protocol v0)"  # on a line of its own
    assert rows["gamma"][6] == "30.0 [21.9, 39.6]"
    assert "<dt>seeds a-b: low-high, sd s</dt>" in table
    alpha = (tmp_path / "site" / "p" / "alpha.html").read_text()
    assert "<th>robust accuracy, training seeds</th><td>55.0-61.0 % over seeds 0-2" in alpha
    assert "mean 58.0, sd 3.0; one evaluation's 95% interval: &plusmn; 9.5)" in alpha
    assert ", measured under protocol v0 (this entry: protocol v1)" in alpha
    assert "seed 0 100.0 / 55.0, seed 1 100.0 / 61.0, seed 2 100.0 / 58.0" in alpha
    beta = (tmp_path / "site" / "p" / "beta.html").read_text()
    assert "50.0-59.0 % over seeds 0-2" in beta and "measured under" not in beta
    assert "training seeds" not in (tmp_path / "site" / "p" / "gamma.html").read_text()


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


def test_the_reports_table_shows_the_seed_spread_too(folder: Path, tmp_path: Path) -> None:
    write_report(folder.parent, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "60.0 [50.2, 69.1]; seeds 0-2: 55.0-61.0, sd 3.0 (protocol v0)" in md and "**seeds a-b" in md
