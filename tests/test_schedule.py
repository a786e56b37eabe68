"""``bench --jobs N`` starts the longest defense first; its estimate of each defense's time decides
only the order (the numbers do not depend on it)."""

import json
from pathlib import Path

from robustdeq.pipeline import _expected_seconds
from robustdeq.records.defense import find_defense
from robustdeq.records.paths import LEADERBOARDS_DIR


def recorded(protocol: str, defense: str) -> float:
    provenance = json.loads((LEADERBOARDS_DIR / protocol / f"{defense}.json").read_text())["provenance"]
    return float(provenance["train_seconds"]) + float(provenance["eval_seconds"])


def test_a_fresh_out_folder_is_ordered_by_the_committed_entries_times(tmp_path: Path) -> None:
    fresh = tmp_path / "digits-linf"  # no entry of its own: the repository's committed ones are read
    fresh.mkdir()
    names = ["deq-jiio", "deq-pgd-at", "lyadeq-pgd-at", "cnn-standard"]
    expected = {n: _expected_seconds(find_defense(n), fresh) for n in names}
    assert expected == {n: recorded("digits-linf", n) for n in names}
    assert max(expected, key=lambda n: expected[n]) == "lyadeq-pgd-at"  # the suite's longest starts first


def test_an_entry_in_the_out_folder_comes_before_the_committed_one(tmp_path: Path) -> None:
    folder = tmp_path / "digits-linf"
    folder.mkdir()
    entry = {"provenance": {"train_seconds": 1.5, "eval_seconds": 2.0}}
    (folder / "deq-pgd-at.json").write_text(json.dumps(entry))
    assert _expected_seconds(find_defense("deq-pgd-at"), folder) == 3.5


def test_without_any_entry_implicit_adversarially_trained_models_come_first(tmp_path: Path) -> None:
    folder = tmp_path / "no-such-protocol"
    folder.mkdir()
    guesses = {n: _expected_seconds(find_defense(n), folder) for n in ("cnn-standard", "deq-standard", "deq-pgd-at")}
    assert guesses["deq-pgd-at"] > guesses["deq-standard"] > guesses["cnn-standard"]
