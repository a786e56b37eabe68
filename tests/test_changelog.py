"""The changelog of leaderboard numbers: old and new values per entry, with what changed."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

from robustdeq.leaderboard.changelog import Change, compare, main, markdown
from tests.test_schema import entry


def test_a_changed_entry_shows_old_and_new_numbers_and_its_causes() -> None:
    old = entry("deq-pgd-at", 0.9, 0.46)
    new = copy.deepcopy(entry("deq-pgd-at", 0.88, 0.48))
    new.update(protocol_version=2, protocol_hash="cd" * 32, n_examples=450)
    new["provenance"]["training"]["epochs"] = 3
    changes = compare({"p/deq-pgd-at": old, "p/gone": entry("gone")}, {"p/deq-pgd-at": new, "p/added": entry("added")})
    assert [c.key for c in changes] == ["p/added", "p/deq-pgd-at", "p/gone"]
    changed = changes[1]
    assert changed.causes() == ["protocol version 1 -> 2", "examples 10 -> 450", "training changed (epochs)"]
    text = markdown(changes, "v0.1", "abc1234, 2026-11-30")
    row = next(line for line in text.splitlines() if line.startswith("| p/deq-pgd-at "))
    assert [c.strip() for c in row.strip("|").split("|")][1:9] == [
        "90.0", "88.0", "-2.0", "46.0", "48.0", "+2.0", "v1, n=10", "v2, n=450"]  # fmt: skip
    assert "| p/added | - | 90.0 |" in text and "new entry" in text and "entry removed" in text
    assert Change("p/x", old, copy.deepcopy(old)).causes() == ["unchanged"]
    noted = markdown(changes, "v0.1", "abc1234, 2026-11-30", ("Protocol version 2 adds PGD-100.",))
    assert noted.index("Protocol version 2 adds PGD-100.") < noted.index("| entry |")


def test_the_tool_reads_the_old_entries_from_git(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    folder = tmp_path / "leaderboards" / "p"
    folder.mkdir(parents=True)
    (folder / "a.json").write_text(json.dumps(entry("a", 0.9, 0.5)))
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "old numbers")
    (folder / "a.json").write_text(json.dumps(entry("a", 0.9, 0.4)))
    out = tmp_path / "CHANGELOG.md"
    main(["HEAD", "--root", str(tmp_path / "leaderboards"), "--out", str(out)])
    row = next(line for line in out.read_text().splitlines() if line.startswith("| p/a "))
    assert "| 50.0 | 40.0 | -10.0 |" in row
