"""`robustdeq site`: rank groups on constructed entries, the pages written, and the pages in a real browser.

The browser tests run Debian's chromium headless (``--dump-dom`` after the page's scripts ran,
``--screenshot``) and skip only when no chromium binary is on PATH (CI installs one).
"""

from __future__ import annotations

import copy
import math
import re
import shutil
import subprocess
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from robustdeq.cli import app
from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard import validate_entry, write_entry
from robustdeq.leaderboard.ranking import rank_groups
from robustdeq.leaderboard.site import COLUMNS, SORT_JS, line_chart, write_site
from robustdeq.leaderboard.stats import unpaired_difference
from tests.test_schema import entry

N = 100
CPU = {
    "type": "cpu",
    "name": "cpu",
    "cuda_version": None,
    "cudnn_version": None,
    "deterministic_algorithms": False,
    "cudnn_deterministic": None,
    "cublas_workspace_config": None,
}
GPU = {**CPU, "type": "cuda", "name": "NVIDIA H200", "cuda_version": "12.8", "cudnn_version": 91000}


def bits(on: Iterable[int], n: int = N) -> str:
    chosen = set(on)
    return "".join("1" if i in chosen else "0" for i in range(n))


def v2(defense: str, robust: Iterable[int], **changes: Any) -> dict[str, Any]:
    """A schema-version-2 entry, every example clean-correct, robust on the examples ``robust``."""
    robust_bits = bits(robust)
    accuracy = robust_bits.count("1") / N
    e = copy.deepcopy(entry(defense))
    e.update(
        schema_version=2,
        n_examples=N,
        clean_accuracy=1.0,
        robust_accuracy=accuracy,
        attacks={"pgd": min(1.0, accuracy + 0.05), "autoattack": accuracy},
        per_example={
            "indices": f"0-{N - 1}",
            "clean_correct": "1" * N,
            "robust": robust_bits,
            "attack_order": ["pgd", "autoattack"],
            "broken_by": "".join("." if r == "1" else "b" for r in robust_bits),
        },
        fidelity=None,
        paper_evaluation=[],
    )
    e["provenance"].update(command="robustdeq bench", checkpoint=None, device=CPU)
    e.update(changes)
    validate_entry(e)
    return e


def v1(defense: str, robust: float, clean: float = 0.9, **changes: Any) -> dict[str, Any]:
    """A schema-version-1 entry (no per-example outcomes) on the same N examples."""
    e = entry(defense, clean, robust)
    e.update(n_examples=N, attacks={"pgd": min(clean, robust + 0.05), "autoattack": robust})
    e.update(changes)
    validate_entry(e)
    return e


def ranks(entries: list[dict[str, Any]]) -> dict[str, str]:
    return {r.entry["defense"]: r.rank for r in rank_groups(entries)}


# ---------------------------------------------------------------- rank groups


def test_two_tied_entries_share_a_rank_and_a_clearly_worse_one_does_not() -> None:
    best, tied, worse = v2("best", range(60)), v2("tied", range(1, 60)), v2("worse", range(20))
    ranked = rank_groups([worse, tied, best])
    assert [(r.entry["defense"], r.position, r.group, r.rank) for r in ranked] == [
        ("best", 1, 1, "1-2"),
        ("tied", 2, 1, "1-2"),
        ("worse", 3, 2, "3"),
    ]
    assert ranked[0].p is None and ranked[1].paired is True and ranked[1].p == pytest.approx(1.0)


def test_paired_outcomes_separate_what_unpaired_counts_cannot() -> None:
    # 8 examples robust for the first alone, none for the second alone: McNemar p = 2 / 2**8.
    first, second = v2("first", range(50)), v2("second", range(42))
    assert ranks([first, second]) == {"first": "1", "second": "2"}
    old = [v1("first", 0.50), v1("second", 0.42)]
    ranked = rank_groups(old)
    assert {r.entry["defense"]: r.rank for r in ranked} == {"first": "1-2", "second": "1-2"}
    assert ranked[1].paired is False
    assert ranked[1].p == pytest.approx(unpaired_difference(50, N, 42, N).p)
    # one version-1 entry is enough to make its comparisons unpaired
    assert rank_groups([first, old[1]])[1].paired is False


def test_holm_adjusts_over_the_comparisons_with_the_groups_best() -> None:
    # "last" alone against "top" has p = 2 / 2**7 = 0.0156 < 0.05; among 4 comparisons Holm makes it 0.0625.
    entries = [v2("top", range(50)), v2("a", range(1, 50)), v2("b", range(2, 50)), v2("c", range(3, 50))]
    assert set(ranks([*entries[:1], v2("last", range(43))]).values()) == {"1", "2"}
    ranked = rank_groups([*entries, v2("last", range(43))])
    assert [r.rank for r in ranked] == ["1-5"] * 5
    assert ranked[-1].p == pytest.approx(4 * 2 / 2**7)


def test_a_group_ends_at_the_first_significantly_worse_entry() -> None:
    # "b" is significantly worse than "a" (7 discordant, all for "a"); "c" is not (20 against 12), but
    # the group stops at "b", so ranks stay contiguous: "c" joins "b"'s group.
    a, b = v2("a", range(50)), v2("b", range(43))
    c = v2("c", [*range(30), *range(50, 62)])
    assert ranks([a, b, c]) == {"a": "1", "b": "2-3", "c": "2-3"}


def test_overestimates_and_not_comparable_entries_are_listed_after_the_ranked_ones() -> None:
    entries = [
        v2("masked", range(90), flags=["zero_gradients"]),
        v2("quick", range(80), flags=["reduced_budget"]),
        v2("random", range(40), flags=["randomized_model"]),  # informational: ranked
        v2("plain", range(30)),
    ]
    ranked = rank_groups(entries)
    assert [(r.entry["defense"], r.position, r.group, r.rank) for r in ranked] == [
        ("random", 1, 1, "1"),
        ("plain", 2, 2, "2"),
        ("masked", 3, None, "-"),
        ("quick", 4, None, "-"),
    ]


def test_ties_are_ordered_by_clean_accuracy_then_name() -> None:
    entries = [v1("b", 0.5, 0.9), v1("a", 0.5, 0.9), v1("c", 0.5, 0.95)]
    assert [r.entry["defense"] for r in rank_groups(entries)] == ["c", "a", "b"]


def test_entries_of_different_protocol_versions_are_not_ranked_together() -> None:
    other = v1("other", 0.4)
    other["protocol_hash"] = "cd" * 32
    with pytest.raises(RobustdeqError, match="different protocol versions"):
        rank_groups([v1("one", 0.5), other])


# ---------------------------------------------------------------- the pages


def site_entries() -> list[dict[str, Any]]:
    """Two v2 entries (one with a fidelity record, a GPU, a solver and a sweep), a v1 one, two flagged."""
    alpha = v2(
        "alpha",
        range(60),
        model_family="deq",
        n_parameters=10_000,
        eps_sweep={
            "attacks": ["pgd"],
            "points": [{"eps": e, "robust_accuracy": a} for e, a in ((0.1, 0.8), (0.2, 0.6), (0.3, 0.2), (1.0, 0.0))],
        },
        fidelity={
            "title": "A paper",
            "arxiv": "2101.00001",
            "venue": "NeurIPS 2021",
            "code": "https://example.org/code",
            "data": "MNIST",
            "architecture": "an MDEQ",
            "training": "PGD-AT",
            "evaluation": "PGD-20",
            "reported": "70% robust",
            "deviations": [
                {"what": "digits instead of MNIST, see `docs/fidelity.md`", "kind": "cpu-budget", "why": "2 cores"}
            ],
        },
        paper_evaluation=[
            {"label": "paper-pgd", "description": "the paper's PGD-20", "accuracy": 0.7, "settings": {"steps": 20}}
        ],
        solver={
            "settings": {
                "f_solver": "anderson",
                "f_max_iter": 40,
                "f_tol": 1e-3,
                "f_stop_mode": "rel",
                "b_solver": "anderson",
                "b_max_iter": 40,
                "b_tol": 1e-3,
                "b_stop_mode": "rel",
                "train_grad": "ift",
                "attack_grad": "ift",
                "phantom_steps": 5,
                "phantom_tau": 0.5,
                "anderson_lam": 1e-8,
                "jac_reg": 0.0,
            },
            "attack_grad_modes": ["ift"],
            "nonconverged_clean": 0.0,
            "nonconverged_adversarial": 0.0,
            "mean_steps_clean": 12.0,
            "mean_steps_adversarial": 13.0,
            "spectral_radius": 0.8,
            "residual_trace_clean": [0.1, 0.01, 0.001],
            "residual_trace_adversarial": [0.1, 0.02, 0.002],
        },
    )
    alpha["provenance"]["device"] = GPU
    alpha["provenance"]["attack_seconds"] = {"pgd": 1.5, "autoattack": 3.0}
    validate_entry(alpha)
    return [
        alpha,
        v2("beta", range(1, 60), n_parameters=900),
        v1("gamma", 0.3, n_parameters=5_000),
        v1("delta", 0.7, n_parameters=70_000, flags=["zero_gradients"]),
        v1("epsilon", 0.65, n_parameters=800, flags=["reduced_budget"]),
    ]


TABLE_ORDER = ["alpha", "beta", "gamma", "delta", "epsilon"]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    for e in site_entries():
        write_entry(tmp_path / "lb", e)
    figure = tmp_path / "p-accuracy.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n")
    written = write_site(tmp_path / "lb", tmp_path / "site", {"p": [figure]})
    out = tmp_path / "site"
    expected = ["sort.js", "p/p-accuracy.png", *(f"p/{d}.html" for d in TABLE_ORDER), "p/index.html", "index.html"]
    assert sorted(written) == sorted(out / name for name in expected)
    return out


class Cells(HTMLParser):
    """The text of every cell of the leaderboard table, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.inside = ("id", "leaderboard") in attrs
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.rows[-1].append("")

    def handle_data(self, data: str) -> None:
        if self.inside and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False


def cells(page: str) -> dict[str, list[str]]:
    """The leaderboard's rows by defense id (the header row under "defense"; rank, letters, defense, ...)."""
    parser = Cells()
    parser.feed(page)
    return {row[2].strip(): [c.strip() for c in row] for row in parser.rows}


def table_rows(page: str) -> list[str]:
    """The defense ids of the leaderboard table's rows, top to bottom."""
    body = page.split('id="leaderboard"', 1)[1].split("</tbody>", 1)[0]
    return re.findall(r'<a href="([^"/]+)\.html"', body)


def test_site_pages_link_up_and_show_the_table(site: Path) -> None:
    index = (site / "index.html").read_text()
    assert 'href="p/index.html"' in index and "Linf eps = 0.2" in index and ">5<" in index
    page = (site / "p" / "index.html").read_text()
    assert table_rows(page) == TABLE_ORDER
    rows = cells(page)
    assert rows["defense"] == [c[0] for c in COLUMNS] and len(COLUMNS) <= 12
    assert {d: rows[d][0] for d in TABLE_ORDER} == {
        "alpha": "1-2",
        "beta": "1-2",
        "gamma": "3",
        "delta": "-",
        "epsilon": "-",
    }
    assert {d: rows[d][1] for d in TABLE_ORDER} == {
        "alpha": "a",
        "beta": "a",
        "gamma": "b",
        "delta": "-",
        "epsilon": "-",
    }
    assert rows["alpha"][5:9] == ["100.0 [96.3, 100.0]", "60.0 [50.2, 69.1]", "60.0", "autoattack 60.0"]
    assert rows["alpha"][9:] == ["10,000", "2.0", "ok † GPU"]
    assert rows["beta"][-1] == "ok" and rows["gamma"][-1] == "ok"
    assert rows["delta"][-1] == "⚠ unreliable" and rows["epsilon"][-1] == "not comparable"
    legend = page.split('class="legend"', 1)[1]
    for marker in ("⚠ unreliable", "not comparable", "ℹ info", "ok", "†", "GPU", "unpaired_difference"):
        assert marker in legend
    assert 'src="../sort.js"' in page and '<img src="p-accuracy.png"' in page


def test_entry_pages_show_every_section_and_mark_unrecorded_keys(site: Path) -> None:
    alpha = (site / "p" / "alpha.html").read_text()
    for section in (
        "Attack runs",
        "Checks",
        "Eps sweep",
        "Flags",
        "Solver",
        "Fidelity",
        "own evaluation",
        "Provenance",
    ):
        assert f">{section}" in alpha or section in alpha
    assert "<svg" in alpha and "robust accuracy under pgd (%)" in alpha and "eps (Linf, log scale)" in alpha
    assert "<code>docs/fidelity.md</code>" in alpha and "paper-pgd" in alpha and "NVIDIA H200" in alpha
    assert 'href="index.html"' in alpha
    gamma = (site / "p" / "gamma.html").read_text()
    assert "not recorded (schema version 1 entry)" in gamma and "<svg" not in gamma
    delta = (site / "p" / "delta.html").read_text()
    assert "zero_gradients" in delta and "overestimate" in delta and "gradient attacks are blind there" in delta


def test_pages_load_nothing_from_elsewhere_and_show_no_markdown(site: Path) -> None:
    for path in site.rglob("*.html"):
        page = path.read_text()
        assert "<link" not in page and "@import" not in page and "url(" not in page
        assert not re.search(r'src="(https?:)?//', page)
        assert re.findall(r'<script src="([^"]+)"', page) in ([], ["../sort.js"])
        visible = re.sub(r"<(style|script)>.*?</\1>", "", page, flags=re.S)
        assert "`" not in visible, path


def test_cli_writes_the_site_with_the_reports_figures(tmp_path: Path) -> None:
    for e in site_entries():
        write_entry(tmp_path / "lb", e)
    (tmp_path / "report").mkdir()
    for name in ("p-accuracy.png", "p-cost.png", "p-x-cost.png"):  # the last one is protocol p-x's
        (tmp_path / "report" / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    result = CliRunner().invoke(
        app, ["site", str(tmp_path / "lb"), "--out", str(tmp_path / "out"), "--report", str(tmp_path / "report")]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out" / "p").glob("*.png")) == ["p-accuracy.png", "p-cost.png"]
    assert CliRunner().invoke(app, ["site", str(tmp_path / "nowhere")]).exit_code == 1


def ticks_and_dots(svg: str) -> tuple[list[tuple[float, str]], list[float]]:
    """(the x axis's ticks as (x, label), the x of every dot) of a :func:`line_chart`."""
    ticks = re.findall(r'<line x1="([\d.]+)" x2="\1" y1="[\d.]+" y2="[\d.]+" stroke="#555"/><text x="\1" y="[\d.]+" '
                       r'text-anchor="middle">([^<]+)</text>', svg)  # fmt: skip
    return [(float(x), label) for x, label in ticks], [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', svg)]


def test_the_sweep_chart_has_a_log_axis_ticked_at_the_swept_values_and_a_dot_at_each() -> None:
    """As the report's eps figure: 0.05, 0.1, 0.2, 0.3 and 1 are log-spaced, not crowded to the left."""
    swept = [0.05, 0.1, 0.2, 0.3, 1.0]
    svg = line_chart([(x, 80 - 20 * i) for i, x in enumerate(swept)], "eps", "accuracy (%)", marker=0.2)
    ticks, dots = ticks_and_dots(svg)
    assert [label for _, label in ticks] == ["0.05", "0.1", "0.2", "0.3", "1"]
    assert [x for x, _ in ticks] == dots and len(dots) == len(swept)
    where = [(d - dots[0]) / (dots[-1] - dots[0]) for d in dots]
    assert where == pytest.approx([math.log(x / 0.05) / math.log(1.0 / 0.05) for x in swept], abs=0.005)
    assert f'<line x1="{dots[2]:.1f}" x2="{dots[2]:.1f}"' in svg  # the dotted protocol eps on its point
    assert ">eps<" in svg and ">accuracy (%)<" in svg


def test_a_sweep_from_zero_is_linear_up_to_its_smallest_positive_value_then_logarithmic() -> None:
    ticks, dots = ticks_and_dots(line_chart([(0.0, 90.0), (0.1, 70.0), (0.2, 50.0), (1.0, 0.0)], "eps", "acc"))
    assert [label for _, label in ticks] == ["0", "0.1", "0.2", "1"]
    decades = [(d - dots[0]) / (dots[1] - dots[0]) for d in dots]  # 0 to 0.1 is one decade wide
    assert decades == pytest.approx([0, 1, 1 + math.log10(2), 2], abs=0.01)


# ---------------------------------------------------------------- in a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium or chromium-browser on PATH")


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless chromium on ``url`` with the page's console on stderr (lines ``...:CONSOLE:<n>] "..."``)."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=2000",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def console_messages(stderr: str) -> list[str]:
    """What pages logged to the console (errors included), from chromium's stderr."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def dom(tmp_path: Path, page: Path, fragment: str = "") -> str:
    run = chromium(tmp_path, page.as_uri() + fragment, "--dump-dom")
    assert console_messages(run.stderr) == []
    return run.stdout


@needs_chromium
def test_the_console_check_sees_a_scripts_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<!doctype html><p>x</p><script>undefinedFunction();</script>")
    messages = console_messages(chromium(tmp_path, broken.as_uri(), "--dump-dom").stderr)
    assert any("Uncaught ReferenceError" in m for m in messages)


@needs_chromium
def test_clicking_a_header_sorts_and_the_fragment_hook_sorts_on_load(site: Path, tmp_path: Path) -> None:
    page = site / "p" / "index.html"
    params = [c[0] for c in COLUMNS].index("params")
    assert table_rows(dom(tmp_path, page)) == TABLE_ORDER
    by_params = dom(tmp_path, page, f"#sort={params}")
    assert table_rows(by_params) == ["epsilon", "beta", "gamma", "alpha", "delta"]  # numerically, not as text
    assert 'aria-sort="ascending"' in by_params and f'data-sorted="{params}"' in by_params
    by_name_descending = dom(tmp_path, page, f"#sort=-{[c[0] for c in COLUMNS].index('defense')}")
    assert table_rows(by_name_descending) == sorted(TABLE_ORDER, reverse=True)
    # the rank column by its group; unranked entries ('-') stay last either way
    assert table_rows(dom(tmp_path, page, "#sort=-0")) == ["gamma", "beta", "alpha", "delta", "epsilon"]
    for other in ("index.html", "p/alpha.html", "p/gamma.html"):
        assert "<table" in dom(tmp_path, site / other)


@needs_chromium
def test_a_screenshot_of_the_table_shows_the_table(site: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "table.png"
    run = chromium(tmp_path, (site / "p" / "index.html").as_uri(), f"--screenshot={shot}", "--window-size=1200,800")
    assert console_messages(run.stderr) == []
    assert shot.stat().st_size > 20_000
    with Image.open(shot) as image:
        assert image.size == (1200, 800)
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 100  # text, links, zebra rows: not one flat colour
        background = max(colours)[0]
        assert background < 0.95 * 1200 * 800  # at least 5% of the page is not background
        # the table's header (its background #eef1f4) spans most of the width on some row of pixels
        header = (0xEE, 0xF1, 0xF4)
        widths = [sum(pixels.getpixel((x, y)) == header for x in range(0, 1200, 4)) for y in range(0, 800, 2)]
        assert max(widths) > 0.6 * 300


def test_sort_script_has_the_fragment_hook() -> None:
    assert "#sort=" in SORT_JS and "location.hash" in SORT_JS


def test_the_command_and_every_option_have_help() -> None:
    result = CliRunner().invoke(app, ["site", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("static site", "Leaderboard root", "--out", "Folder for the site", "--report", "robustdeq report"):
        assert text in result.output
