"""A command that writes checks its output folder before any work: one line naming it, exit 1, nothing written."""

import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robustdeq import pipeline
from robustdeq.cli import app

REPO = Path(__file__).resolve().parent.parent
LEADERBOARDS = str(REPO / "leaderboards")

COMMANDS = {
    "submit": ["submit", str(REPO / "examples" / "mlp-submission"), "--out", "{out}"],
    "bench": ["bench", "--defenses", "cnn-standard", "--out", "{out}"],
    "train": ["train", "cnn-standard", "--out", "{out}"],
    "evaluate": ["evaluate", "zoo:digits-linf/cnn-standard", "--out", "{out}"],
    "sweep": ["sweep", "wtm-pgd-at", "--depth", "1", "--out", "{out}"],
    "report": ["report", LEADERBOARDS, "--out", "{out}"],
    "site": ["site", LEADERBOARDS, "--out", "{out}"],
    "fidelity": ["fidelity", "--out", "{out}/fidelity.md", "--readme", "{out}/README.md"],
}


def no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("training or an attack started before the output folder was checked")


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.fixture(autouse=True)
def _work_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "train_defense", no_work)
    monkeypatch.setattr(pipeline, "evaluate", no_work)
    monkeypatch.setattr(sys.modules["robustdeq.cli.train"], "train_defense", no_work)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unwritable_output_folder_is_one_line_before_any_work(command: str, tmp_path: Path) -> None:
    # A folder under a regular file cannot be created, even by root (whom chmod does not stop).
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    out = blocker / "out"
    before = files_under(tmp_path)
    args = [a.replace("{out}", str(out)) for a in COMMANDS[command]]
    result = CliRunner().invoke(app, [*args, *(["--quiet"] if command in ("submit", "bench", "train") else [])])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: cannot write to") and "Not a directory" in lines[0]
    assert str(blocker) in result.output.replace("\n", "")
    assert files_under(tmp_path) == before and blocker.read_text() == "not a folder\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder regardless of its mode")
def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = CliRunner().invoke(app, ["train", "cnn-standard", "--out", str(out), "--quiet"])
    finally:
        out.chmod(0o755)
    assert result.exit_code == 1 and "Permission denied" in result.output
    assert not any(out.iterdir())
