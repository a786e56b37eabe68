"""The tables and the site say which check re-runs are in the worst case, and what they say matches the
computation: a run called outside never took part in the per-example worst case, a run called inside did."""

from pathlib import Path

import pytest

from robustdeq.leaderboard import read_entries
from robustdeq.leaderboard.ranking import rank_groups
from robustdeq.leaderboard.render import details
from robustdeq.leaderboard.site import entry_page
from robustdeq.records.entry import split_checks

ROOT = Path(__file__).resolve().parent.parent / "leaderboards" / "digits-linf"
ENTRIES = {e["defense"]: e for e in read_entries(ROOT)}


@pytest.mark.parametrize("name", ["deq-pgd-at", "deq-pgd-at-er", "lyadeq-pgd-at", "cnn-pgd-at"])
def test_checks_are_labelled_as_the_runner_counted_them(name: str) -> None:
    e = ENTRIES[name]
    inside, outside = split_checks(e)
    order = e["per_example"]["attack_order"]  # the runs whose per-example outcomes make up the worst case
    assert inside and all(k in order for k in inside)  # the longer PGD: its breaks count
    assert all(k not in order for k in outside)  # the doubled budgets: compared only
    if e["model_family"] != "explicit":
        assert outside  # an implicit model has its doubled-budget check
    md = details(e)
    page = entry_page(rank_groups([e])[0], "digits-linf")
    for k in inside:
        line = next(line for line in md.splitlines() if f"{k} " in line and line.startswith("Checks"))
        assert line.startswith("Checks in the worst case"), line
    for k in outside:
        line = next(line for line in md.splitlines() if f"{k} " in line and line.startswith("Checks"))
        assert line.startswith("Checks outside the worst case"), line
    rows = [row for row in page.split("<tr>") if "worst case</td>" in row]
    assert len(rows) == len(e["checks"])
    for row in rows:
        name_cell = row.split("</td>")[0]
        run = name_cell.rsplit(">", 1)[-1]
        assert ("outside the worst case" in row) == (run in outside), row
