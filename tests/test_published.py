"""Numbers published elsewhere (``leaderboards/<protocol>/published.toml``): a strict record, shown below the
ranked table of the leaderboard, on the site's protocol page and in the report, never ranked with the entries,
and shown before any entry exists."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from robustdeq.cli import app
from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard import read_entries, render, table, write_entry
from robustdeq.leaderboard.render import PUBLISHED_TITLE
from robustdeq.leaderboard.site import write_site
from robustdeq.records.published import PUBLISHED, published_only, read_published
from robustdeq.records.schemas import schema
from robustdeq.report import write_report
from tests.test_site import cells, table_rows, v2

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "leaderboards" / "mnist-linf-0.3"
AUTOATTACK_README = "https://github.com/fra31/auto-attack/blob/a39220048b3c9f2cca9a4d3a54604793c68eca7e/README.md"

ONE = """protocol = "{protocol}"
note = "Searched for X's own number; not found."

[[result]]
model = "Somebody et al., 2020: a defense"
paper = "https://example.org/paper"
clean = 98.5
robust = 88.25
reported = 90.0
attack = "AutoAttack (standard)"
source = "https://example.org/table"
listed = "README, table 'MNIST', row 7"
setting = "the authors' model, full test set"
"""


def published_folder(root: Path, protocol: str = "mnist-linf-0.3", text: str = ONE) -> Path:
    folder = root / protocol
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PUBLISHED).write_text(text.format(protocol=protocol))
    return folder


def test_the_committed_mnist_numbers_are_the_autoattack_readmes() -> None:
    published = read_published(MNIST)
    assert published is not None and published.protocol == "mnist-linf-0.3"
    by_paper = {r.paper: r for r in published.result}
    # (clean, AutoAttack, the paper's own) exactly as the README's "MNIST - Linf" table lists them
    expected = {
        "https://arxiv.org/abs/1706.06083": (98.53, 88.50, 89.62, 7),  # Madry et al., 2018
        "https://arxiv.org/abs/2010.03593": (99.26, 96.34, 96.38, 1),  # Gowal et al., 2020
        "https://arxiv.org/abs/1901.08573": (99.48, 92.81, 95.60, 4),  # TRADES, Zhang et al., 2019b
    }
    for paper, (clean, robust, reported, row) in expected.items():
        r = by_paper[paper]
        assert (r.clean, r.robust, r.reported) == (clean, robust, reported)
        assert r.listed.endswith(f"row {row}") and "AutoAttack" in r.attack
    assert len(published.result) == 10  # every row of the README's MNIST table
    assert all(r.source.startswith(AUTOATTACK_README) for r in published.result)
    jsonschema.Draft202012Validator(schema("published")).validate(tomllib.loads((MNIST / PUBLISHED).read_text()))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("robust = 88.25", "robust = 99.0"), "0 <= robust <= clean <= 100"),
        (('source = "https://example.org/table"', 'source = "README"'), "source must be a link"),
        (('setting = "the authors\' model, full test set"', 'setting = " "'), "setting must not be empty"),
        (("reported = 90.0", "reported = 190.0"), "reported is a percentage"),
        (("clean = 98.5", 'clean = "98.5"'), "[[result]] #1: field 'clean' must be float, got str"),
        (("clean = 98.5", "clean = 80"), "0 <= robust <= clean"),  # a whole number is read as a number
        (("reported = 90.0", "rank = 7"), "unknown field 'rank'"),
        (('protocol = "{protocol}"', 'protocol = "digits-linf"'), "is not its folder's"),
    ],
)
def test_a_malformed_published_file_is_a_one_line_error(tmp_path: Path, change: tuple[str, str], problem: str) -> None:
    folder = published_folder(tmp_path, text=ONE.replace(*change))
    with pytest.raises(RobustdeqError, match=re.escape(problem)) as error:
        read_published(folder)
    assert "\n" not in str(error.value) and PUBLISHED in str(error.value)


def test_with_no_entries_yet_the_leaderboard_shows_the_published_numbers(tmp_path: Path) -> None:
    root = tmp_path / "lb"
    shutil.copytree(MNIST.parent / "digits-l2", root / "digits-l2")
    folder = published_folder(root)
    assert published_only(root) == [folder]
    result = CliRunner().invoke(app, ["leaderboard", str(root)])
    assert result.exit_code == 0, result.output
    assert "no entries yet, 1 published numbers" in result.output
    md = (folder / "leaderboard.md").read_text()
    assert md.startswith("# Leaderboard: mnist-linf-0.3\n\nData set mnist, threat model Linf eps = 0.3")
    assert "No entries yet" in md and f"## {PUBLISHED_TITLE}" in md
    row = "| [Somebody et al., 2020: a defense](https://example.org/paper) | 98.50 | 88.25 | AutoAttack (standard) |"
    assert row in md and "[README, table 'MNIST', row 7](https://example.org/table)" in md
    assert "Searched for X's own number; not found." in md
    assert not (folder / "leaderboard.csv").exists()  # no entries, no numbers of ours


def test_the_published_numbers_sit_below_the_ranked_table_and_are_never_ranked(tmp_path: Path) -> None:
    folder = published_folder(tmp_path / "lb")
    for e in (v2("deq", range(40), protocol="mnist-linf-0.3"), v2("cnn", range(60), protocol="mnist-linf-0.3")):
        write_entry(tmp_path / "lb", e)
    md_path, csv_path, _ = render(read_entries(folder), folder)
    md = md_path.read_text()
    ranked_table, rest = md.split(f"## {PUBLISHED_TITLE}")
    assert "[cnn](#cnn)" in ranked_table and "[deq](#deq)" in ranked_table and "Somebody" not in ranked_table
    assert "Somebody et al." in rest.split("## Details per defense")[0]
    assert "Somebody" not in csv_path.read_text() and list(table(read_entries(folder))["defense"]) == ["cnn", "deq"]
    assert published_only(tmp_path / "lb") == []  # entries now: an ordinary protocol folder


def test_the_site_shows_the_published_numbers_on_the_protocol_page_with_and_without_entries(tmp_path: Path) -> None:
    root, out = tmp_path / "lb", tmp_path / "site"
    write_entry(root, v2("a", range(50)))  # protocol p, no published numbers
    published_folder(root)
    written = write_site(root, out)
    assert out / "mnist-linf-0.3" / "index.html" in written
    index = (out / "index.html").read_text()
    assert 'href="mnist-linf-0.3/index.html"' in index and "Linf eps = 0.3" in index
    page = (out / "mnist-linf-0.3" / "index.html").read_text()
    assert "<b>No entries yet</b>" in page and 'id="leaderboard"' not in page
    assert f'<h2 id="published">{PUBLISHED_TITLE}</h2>' in page
    assert '<a href="https://example.org/paper">Somebody et al., 2020: a defense</a>' in page and ">88.25<" in page
    assert "Somebody" not in (out / "p" / "index.html").read_text()
    for name in ("cnn", "deq"):
        write_entry(root, v2(name, range(60 if name == "cnn" else 40), protocol="mnist-linf-0.3"))
    write_site(root, out)
    page = (out / "mnist-linf-0.3" / "index.html").read_text()
    assert table_rows(page) == ["cnn", "deq"] and "Somebody et al., 2020: a defense" not in cells(page)
    assert page.index('id="leaderboard"') < page.index('id="published"') and "No entries yet" not in page


def test_the_report_shows_the_published_numbers_with_and_without_entries(tmp_path: Path) -> None:
    root, out = tmp_path / "lb", tmp_path / "report"
    write_entry(root, v2("a", range(50)))
    published_folder(root)
    write_report(root, out, benchmarks=tmp_path / "none")
    md = (out / "report.md").read_text()
    section = md.split("## mnist-linf-0.3")[1].split("## The seed papers' claims")[0]
    assert "No entries yet." in section and f"### {PUBLISHED_TITLE}" in section and "| 98.50 | 88.25 |" in section
    html = (out / "report.html").read_text()
    assert f'<h3 id="published">{PUBLISHED_TITLE}</h3>' in html and ">88.25<" in html
    write_entry(root, v2("deq", range(40), protocol="mnist-linf-0.3"))
    write_report(root, out, benchmarks=tmp_path / "none")
    section = (out / "report.md").read_text().split("## mnist-linf-0.3")[1].split("## The seed papers' claims")[0]
    assert "No entries yet" not in section and section.index("| deq ") < section.index(PUBLISHED_TITLE)
