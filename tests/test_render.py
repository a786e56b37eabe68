"""`leaderboard.md`: a compact headline table with rank groups, and every attack run in the details."""

from __future__ import annotations

import copy
from pathlib import Path

from robustdeq.leaderboard import render
from robustdeq.leaderboard.headline import comparable
from robustdeq.leaderboard.render import MAX_COLUMNS, headline, table
from tests.test_site import site_entries, v2


def markdown_tables(text: str) -> list[list[str]]:
    """The header row of every Markdown table in ``text``, as a list of column names."""
    lines = text.splitlines()
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line, below in zip(lines, lines[1:], strict=False)
        if line.startswith("|") and below.startswith("|") and set(below) <= set("|:- ")
    ]


def test_the_headline_has_at_most_twelve_columns_and_the_details_every_attack(tmp_path: Path) -> None:
    entries = site_entries()
    wide = copy.deepcopy(entries[0])
    wide["defense"] = "wide"
    names = [f"pgd@mode{i}" for i in range(20)]
    wide["attacks"] = {**wide["attacks"], **{name: 0.9 for name in names}}
    wide["per_example"]["attack_order"] += names
    md, csv, _ = render([*entries, wide], tmp_path)
    text = md.read_text()
    head = markdown_tables(text)[0]
    assert len(head) <= MAX_COLUMNS and head[0] == "rank" and "robust % [95% CI]" in head
    assert "(protocol version 1)" in text.splitlines()[0]
    details = text.split("## Details per defense", 1)[1]
    for e in [*entries, wide]:
        section = details.split(f"### {e['defense']}\n", 1)[1].split("\n### ", 1)[0]
        for name in e["attacks"]:
            assert f"| {name} " in section, (e["defense"], name)
    assert "pgd@mode19 %" in csv.read_text().splitlines()[0]  # the CSV keeps every column


def test_headline_shows_rank_groups_intervals_and_markers() -> None:
    frame = headline(site_entries())
    rows = {d.split("]")[0][1:]: row for d, row in zip(frame["defense"], frame.to_dict("records"), strict=True)}
    assert [rows[d]["rank"] for d in ("alpha", "beta", "gamma", "delta", "epsilon")] == ["1-2", "1-2", "3", "-", "-"]
    assert rows["alpha"]["defense"] == "[alpha](#alpha) †"  # its fidelity record lists a deviation
    assert rows["alpha"]["robust % [95% CI]"] == "60.0 [50.2, 69.1]"
    assert rows["alpha"]["strongest attack"] == "autoattack (60.0)"
    assert rows["alpha"]["status"] == "ok GPU"
    assert rows["delta"]["status"] == "⚠ unreliable" and rows["epsilon"]["status"] == "not comparable"


def test_entries_on_another_number_of_examples_are_set_apart() -> None:
    a, b, c = v2("a", range(60)), v2("b", range(50)), v2("c", range(55))
    small = copy.deepcopy(c)
    small.update(defense="small", n_examples=50)
    main, apart = comparable([a, b, small])
    assert [e["defense"] for e in main] == ["a", "b"] and [e["defense"] for e in apart] == ["small"]
    assert table([a, b, small])["rank"].tolist()[-1] == "apart"
    assert "small" not in " ".join(headline([a, b, small])["defense"])


def test_the_site_lists_entries_of_another_protocol_version_apart(tmp_path: Path) -> None:
    from robustdeq.leaderboard import write_entry
    from robustdeq.leaderboard.site import write_site

    old = v2("old", range(90))
    old.update(protocol_hash="cd" * 32, protocol_version=0)
    for e in (v2("a", range(60)), v2("b", range(50)), v2("c", range(40)), old):
        write_entry(tmp_path / "lb", e)
    write_site(tmp_path / "lb", tmp_path / "site")
    page = (tmp_path / "site" / "p" / "index.html").read_text()
    assert "(protocol version 1)" in page and "old (version 0, n = 100)" in page
    assert page.index('href="old.html"') > page.index('href="c.html"')  # after the ranked ones
