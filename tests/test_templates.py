"""The HTML pages escape what entries say: a defense's name, paper, flags, settings and prose that hold
markup show as text on every page (site index, protocol page, entry page, leaderboard.html, report),
and no element, script or attribute comes from an entry.

The pages are Jinja2 templates with autoescape on (robustdeq/leaderboard/templates,
robustdeq/report/templates); with it off these tests fail.
"""

from __future__ import annotations

import copy
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from robustdeq.leaderboard import render, validate_entry, write_entry
from robustdeq.leaderboard.site import line_chart, write_site
from robustdeq.report.build import write_report
from tests.test_site import dom, needs_chromium, v2

EVIL = "<script>alert(1)</script><b>bold</b> \"quotes\" & ampersands 'apostrophes'"
PAPER = 'https://example.org/paper?a=1&b=2"><script>alert(2)</script>'


def evil_entry() -> dict[str, Any]:
    """A schema-version-2 entry (tests.test_schema.entry via tests.test_site.v2) with markup in every
    free-text field a page shows."""
    e = v2("evil", range(40), flags=["zero_gradients", f"flag {EVIL}"])
    e.update(
        defense_name=f"Defense {EVIL}",
        paper=PAPER,
        dataset=f"digits {EVIL}",
        model_family=f"family {EVIL}",
        model_settings={"channels": 16, f"key {EVIL}": f"value {EVIL}", "nested": {"x": EVIL}},
        checks={f"check {EVIL}": 0.4},
        eps_sweep={
            "attacks": [f"pgd {EVIL}"],
            "points": [{"eps": 0.1, "robust_accuracy": 0.6}, {"eps": 0.2, "robust_accuracy": 0.4}],
        },
        fidelity={
            "title": f"title {EVIL}",
            "arxiv": '2101.00001"><script>alert(3)</script>',
            "venue": f"venue {EVIL}",
            "code": f"https://example.org/code{EVIL}",
            "data": f"data {EVIL}",
            "architecture": f"architecture `{EVIL}`",
            "training": f"training {EVIL}",
            "evaluation": f"evaluation {EVIL}",
            "reported": f"reported {EVIL}",
            "deviations": [{"what": f"what {EVIL}", "kind": f"kind {EVIL}", "why": f"why `{EVIL}` {EVIL}"}],
        },
        paper_evaluation=[
            {
                "label": f"label {EVIL}",
                "description": f'description {EVIL} `code {EVIL}` https://example.org/a"onmouseover=alert(4)',
                "accuracy": 0.5,
                "settings": {"steps": 20, "note": EVIL},
            }
        ],
    )
    e["provenance"].update(command=f"robustdeq bench {EVIL}", hardware=f"hardware {EVIL}")
    e["provenance"]["training"]["recipe"] = f"recipe {EVIL}"
    e["provenance"]["training"]["recipe_settings"] = {"note": EVIL}
    validate_entry(e)
    return e


def other_entry() -> dict[str, Any]:
    other = copy.deepcopy(v2("other", range(50)))
    other["dataset"] = evil_entry()["dataset"]  # one protocol, one data set
    validate_entry(other)
    return other


class Page(HTMLParser):
    """The text (entities decoded, outside script and style), attribute values and elements of a page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.open: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open.append(tag)
        if tag == "script":
            self.scripts.append(dict(attrs))
        self.attributes += [(tag, name, value or "") for name, value in attrs]

    def handle_endtag(self, tag: str) -> None:
        if self.open and self.open[-1] == tag:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        if not self.open or self.open[-1] not in ("script", "style"):
            self.text.append(data)

    def shows(self, value: str) -> bool:
        return value in "".join(self.text)

    def has_attribute(self, value: str) -> bool:
        return any(value in v for _, _, v in self.attributes)


def assert_nothing_injected(html: str, scripts: list[str] | None = None) -> Page:
    """No element from an entry: the only scripts are ``scripts`` (their src), no event handler
    attributes, no <b>bold</b> element; the raw HTML has no unescaped script tag of an entry."""
    page = Page(html)
    assert [s.get("src") for s in page.scripts] == (scripts or [])
    assert not [a for a in page.attributes if a[1].startswith("on")]
    assert "<script>alert" not in html and "<b>bold</b>" not in html
    assert not any(v.startswith("javascript:") for _, _, v in page.attributes)
    return page


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every page that shows the entry, by name."""
    tmp = tmp_path_factory.mktemp("evil")
    entries = [evil_entry(), other_entry()]
    for e in entries:
        write_entry(tmp / "lb", e)
    write_site(tmp / "lb", tmp / "site")
    render(entries, tmp / "lb" / "p")
    write_report(tmp / "lb", tmp / "report")
    return {
        "site index": (tmp / "site" / "index.html").read_text(),
        "protocol page": (tmp / "site" / "p" / "index.html").read_text(),
        "entry page": (tmp / "site" / "p" / "evil.html").read_text(),
        "leaderboard.html": (tmp / "lb" / "p" / "leaderboard.html").read_text(),
        "report": (tmp / "report" / "report.html").read_text(),
        "site folder": str(tmp / "site"),
    }


@pytest.mark.parametrize(
    "name, scripts",
    [
        ("site index", []),
        ("protocol page", ["../sort.js"]),
        ("entry page", []),
        ("leaderboard.html", []),
        ("report", []),
    ],
)
def test_no_page_runs_or_renders_markup_from_an_entry(pages: dict[str, str], name: str, scripts: list[str]) -> None:
    page = assert_nothing_injected(pages[name], scripts)
    assert page.shows(f"digits {EVIL}")  # the data set, on every page


@pytest.mark.parametrize("name", ["protocol page", "leaderboard.html", "report"])
def test_tables_show_the_family_and_recipe_as_text(pages: dict[str, str], name: str) -> None:
    page = Page(pages[name])
    assert page.shows(f"family {EVIL}") and page.shows(f"recipe {EVIL}")


def test_the_protocol_page_keeps_markup_inside_its_attributes(pages: dict[str, str]) -> None:
    page = Page(pages["protocol page"])
    assert ("a", "title", f"Defense {EVIL}") in page.attributes  # the name, on hover
    assert page.has_attribute(f"flag {EVIL} (overestimate)")  # the flags, on hover over the status


def test_the_entry_page_shows_every_field_as_text(pages: dict[str, str]) -> None:
    page = Page(pages["entry page"])
    for value in (
        f"Defense {EVIL}",
        f"flag {EVIL}",
        f"key {EVIL}=value {EVIL}",  # model settings
        '"x": "<script>alert(1)</script>',  # nested settings, as JSON
        f"description {EVIL} ",
        f"code {EVIL}",
        f"label {EVIL}",
        f"check {EVIL}",
        f"robustdeq bench {EVIL}",
        f"hardware {EVIL}",
        f"title {EVIL}",
        f"why {EVIL} {EVIL}",
        f"robust accuracy under pgd {EVIL} (%)",  # the chart's axis label
        PAPER,
    ):
        assert page.shows(value), value
    # links keep the whole URL inside href: a quote in it does not end the attribute
    assert ("a", "href", PAPER) in page.attributes
    assert ("a", "href", 'https://arxiv.org/abs/2101.00001"><script>alert(3)</script>') in page.attributes
    assert ("a", "href", "https://example.org/a") in page.attributes  # a bare URL ends at the quote
    # Markdown code spans are <code>, their content text
    assert "<code>architecture" not in pages["entry page"]
    assert "<code>code &lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in pages["entry page"]


def test_the_chart_escapes_its_labels() -> None:
    svg = line_chart([(0.1, 80.0), (0.2, 40.0)], f"eps {EVIL}", "accuracy", marker=0.15, marker_label=EVIL)
    page = assert_nothing_injected(svg)
    assert page.shows(f"eps {EVIL}") and page.shows(EVIL)
    assert page.has_attribute(f"accuracy against eps {EVIL}")  # aria-label


@needs_chromium
def test_a_browser_builds_no_element_from_the_entry(pages: dict[str, str], tmp_path: Path) -> None:
    site = Path(pages["site folder"])
    for path in (site / "p" / "evil.html", site / "p" / "index.html", site / "index.html"):
        html = dom(tmp_path, path)  # also: nothing logged to the console
        assert "<script>alert" not in html and "<b>bold</b>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in html
