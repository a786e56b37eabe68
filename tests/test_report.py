"""`robustdeq report`: figures read only from entries, one series (or tick) per defense."""

import copy
from pathlib import Path

from robustdeq.leaderboard import write_entry
from robustdeq.report.build import accuracy_figure, cost_figure, knob_figure, write_report
from tests.test_schema import entry


def entries() -> list[dict]:  # type: ignore[type-arg]
    out = []
    for i, (depth, density) in enumerate([(4, 0.5), (4, 1.0), (8, 0.5), (8, 1.0)]):
        e = copy.deepcopy(entry(f"wtm-{i}", 0.9, 0.3 + 0.05 * i))
        e["model_family"] = "weight_tied"
        e["model_settings"] = {"depth": depth, "density": density}
        e["forward_cost"] = float(depth)
        out.append(e)
    return out


def test_each_figure_has_one_series_or_tick_per_defense() -> None:
    data = entries()
    bars = accuracy_figure(data)
    assert [t.get_text() for t in bars.axes[0].get_xticklabels()] == [e["defense"] for e in sorted(
        data, key=lambda e: -e["robust_accuracy"])]  # fmt: skip
    cost = cost_figure(data)
    for ax in cost.axes:
        assert len(ax.collections) == len(data)
    knobs = knob_figure(data)
    assert knobs is not None and len(knobs.axes) == 2  # depth and density vary
    for ax in knobs.axes:
        assert [line.get_label() for line in ax.get_lines()] == ["clean", "robust (worst case)"]


def test_no_knob_figure_when_nothing_varies() -> None:
    assert knob_figure([entry("a"), entry("b")]) is None


def test_write_report_writes_markdown_html_and_pngs(tmp_path: Path) -> None:
    for e in entries():
        write_entry(tmp_path / "lb", e)
    paths = write_report(tmp_path / "lb", tmp_path / "report")
    names = sorted(p.name for p in paths)
    assert names == ["p-accuracy.png", "p-cost.png", "p-knobs.png", "report.html", "report.md"]
    for path in paths:
        assert path.stat().st_size > 500
    md = (tmp_path / "report" / "report.md").read_text()
    assert "![p-knobs](p-knobs.png)" in md and "| wtm-3" in md
