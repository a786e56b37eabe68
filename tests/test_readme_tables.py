"""`robustdeq leaderboard` writes each protocol's compact table into the README beside the root, between
that protocol's markers, and leaves a README without markers alone."""

import shutil
from pathlib import Path

from typer.testing import CliRunner

from robustdeq.cli import app
from robustdeq.leaderboard.readme import readme_blocks

COMMITTED = Path(__file__).resolve().parent.parent / "leaderboards" / "digits-linf"


def test_the_readme_block_gets_the_ranked_table(tmp_path: Path) -> None:
    folder = tmp_path / "leaderboards" / "digits-linf"
    folder.mkdir(parents=True)
    for name in ("cnn-pgd-at.json", "cnn-standard.json", "deq-pgd-at.json"):
        shutil.copy(COMMITTED / name, folder / name)
    readme = tmp_path / "README.md"
    start, end = "<!-- leaderboard:digits-linf:start -->", "<!-- leaderboard:digits-linf:end -->"
    readme.write_text(f"# mine\n\n{start}\nold table\n{end}\n\ntext after\n")
    result = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "leaderboards")])
    assert result.exit_code == 0, result.output
    body = readme_blocks(readme)["digits-linf"]
    assert "old table" not in body and readme.read_text().endswith("\n\ntext after\n")
    rows = [line for line in body.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert [row.split("|")[2].split()[0] for row in rows] == ["cnn-pgd-at", "deq-pgd-at", "cnn-standard"]
    assert "54.0 [44.3, 63.4]" in rows[0]  # cnn-pgd-at's robust accuracy and interval, as committed
    assert "3 entries on 100 test images" in body and "† marks" in body


def test_a_readme_without_blocks_and_an_empty_protocol(tmp_path: Path) -> None:
    folder = tmp_path / "leaderboards" / "digits-linf"
    folder.mkdir(parents=True)
    shutil.copy(COMMITTED / "cnn-standard.json", folder / "cnn-standard.json")
    plain = "# mine\n\nno blocks here\n"
    (tmp_path / "README.md").write_text(plain)
    assert CliRunner().invoke(app, ["leaderboard", str(tmp_path / "leaderboards")]).exit_code == 0
    assert (tmp_path / "README.md").read_text() == plain
    (tmp_path / "leaderboards" / "other").mkdir()
    (tmp_path / "README.md").write_text("<!-- leaderboard:other:start -->\n<!-- leaderboard:other:end -->\n")
    assert CliRunner().invoke(app, ["leaderboard", str(tmp_path / "leaderboards")]).exit_code == 0
    assert "No entries yet" in readme_blocks(tmp_path / "README.md")["other"]
