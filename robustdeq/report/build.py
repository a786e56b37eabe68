"""Build a report from leaderboard entries (never retrains or re-evaluates anything)."""

from __future__ import annotations

import base64
import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jinja2 import Environment  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from robustdeq.errors import RobustdeqError  # noqa: E402
from robustdeq.leaderboard import read_entries  # noqa: E402
from robustdeq.leaderboard.headline import recipe, shown_entries  # noqa: E402
from robustdeq.leaderboard.render import (  # noqa: E402
    NO_ENTRIES_YET,
    dataframe_cells,
    headline,
    legend,
    markdown,
    protocol_line,
    published_context,
    published_section,
    ranked,
    template_environment,
)
from robustdeq.leaderboard.stats import wilson  # noqa: E402
from robustdeq.records.entry import best_known  # noqa: E402
from robustdeq.records.published import published_only, read_published  # noqa: E402
from robustdeq.records.store import atomic_write_text, protocol_folders  # noqa: E402
from robustdeq.report.claims import (  # noqa: E402
    BENCHMARK_RESULTS,
    CLAIMS_FILE,
    Finding,
    assess_all,
    expectation,
    load_claims,
    markdown_section,
    p_value,
    summary_rows,
)
from robustdeq.report.claims import measured as claim_difference  # noqa: E402
from robustdeq.report.claims import value as claim_value  # noqa: E402

FAMILY_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
RECIPE_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
VARIANT_LINES = ["-", "--", ":", "-."]
PANEL_SERIES = 7  # most lines one panel shows; more are split over panels (facets)
PANEL_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


@dataclass(frozen=True)
class Style:
    """How one entry is drawn in every figure: colour = model family, marker = training recipe,
    line style = which of the entries sharing a family and recipe."""

    colour: str
    marker: str
    line: str


def styles(entries: list[dict[str, Any]]) -> dict[str, Style]:
    """The style of each entry, by defense id; the same entries get the same styles in every figure."""
    families = sorted({e["model_family"] for e in entries})
    recipes = sorted({recipe(e) for e in entries})
    seen: Counter[tuple[str, str]] = Counter()
    out = {}
    for e in sorted(entries, key=lambda e: e["defense"]):
        key = (e["model_family"], recipe(e))
        out[e["defense"]] = Style(
            FAMILY_COLOURS[families.index(key[0]) % len(FAMILY_COLOURS)],
            RECIPE_MARKERS[recipes.index(key[1]) % len(RECIPE_MARKERS)],
            VARIANT_LINES[seen[key] % len(VARIANT_LINES)],
        )
        seen[key] += 1
    return out


def key_legend(fig: Figure, entries: list[dict[str, Any]], style: dict[str, Style]) -> None:
    """Two legends right of the axes: colour per model family, marker per training recipe."""
    by_family = {e["model_family"]: style[e["defense"]].colour for e in entries}
    by_recipe = {recipe(e): style[e["defense"]].marker for e in entries}
    families = [Line2D([], [], color=c, marker="o", linestyle="", label=f) for f, c in sorted(by_family.items())]
    recipes = [Line2D([], [], color="#444", marker=m, linestyle="", label=r) for r, m in sorted(by_recipe.items())]
    first = fig.legend(handles=families, title="model family", loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.legend(handles=recipes, title="training recipe", loc="upper left", bbox_to_anchor=(1.0, 0.55))
    fig.add_artist(first)


def wilson_error(accuracy: float, n: int) -> tuple[float, float]:
    """(below, above) in percentage points: the 95% Wilson interval as error bar lengths."""
    low, high = wilson(round(accuracy * n), n)
    return max(0.0, 100 * (accuracy - low)), max(0.0, 100 * (high - accuracy))  # max: rounding at 0 and 1


def ordered(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries in the headline table's order (rank groups first, then unranked, then set apart)."""
    groups, apart = ranked(entries)
    return [r.entry for r in groups] + apart


def accuracy_figure(entries: list[dict[str, Any]]) -> Figure:
    """Clean and robust accuracy per defense with 95% Wilson intervals, in the table's order (best on top)."""
    groups, apart = ranked(entries)
    rows = [r.entry for r in groups] + apart
    n_ranked = sum(r.rank not in ("-", "apart") for r in groups)  # ranked rows come first in table order
    style = styles(entries)
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 1.2 + 0.3 * len(rows)), sharey=True)
    ys = list(range(len(rows)))[::-1]
    for ax, key, title in (
        (axes[0], "clean_accuracy", "clean accuracy (%)"),
        (axes[1], "robust_accuracy", "robust accuracy, worst case (%)"),
    ):
        for y, e in zip(ys, rows, strict=True):
            below, above = wilson_error(e[key], e["n_examples"])
            s = style[e["defense"]]
            ax.errorbar(
                [100 * e[key]], [y], xerr=[[below], [above]], color=s.colour, marker=s.marker, capsize=2, linewidth=1
            )
        ax.set_xlabel(title)
        ax.set_xlim(0, 100)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(
        ys, [e["defense"] if i < n_ranked else f"{e['defense']} (not ranked)" for i, e in enumerate(rows)]
    )
    if n_ranked < len(rows):  # unranked entries (unreliable, other protocol version) below a rule, in grey
        boundary = len(rows) - n_ranked - 0.5
        for ax in axes:
            ax.axhline(boundary, color="#555", linewidth=0.8, linestyle="--")
            ax.axhspan(-0.5, boundary, color="#eeeeee", zorder=0)
        for label in axes[0].get_yticklabels()[n_ranked:]:
            label.set_color("#777")
    key_legend(fig, entries, style)
    fig.suptitle(f"{protocol_title(entries)}: accuracy with 95% Wilson intervals (table order, best on top)")
    fig.tight_layout()
    return fig


def attacks_figure(entries: list[dict[str, Any]]) -> Figure:
    """Each attack run's own accuracy (%) per defense as a grid: rows in the table's order, one column
    per attack run; empty where the run does not apply (e.g. no solver gradient modes for a CNN)."""
    rows = ordered(entries)
    names: list[str] = []
    for e in rows:
        names.extend(name for name in e["attacks"] if name not in names)
    grid = np.full((len(rows), len(names)), np.nan)
    for i, e in enumerate(rows):
        for j, name in enumerate(names):
            if name in e["attacks"]:
                grid[i, j] = 100 * e["attacks"][name]
    fig, ax = plt.subplots(figsize=(2.5 + 0.55 * len(names), 1.5 + 0.3 * len(rows)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(names)):
            if not np.isnan(grid[i, j]):
                colour = "white" if grid[i, j] < 60 else "black"
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [e["defense"] for e in rows], fontsize=8)
    ax.set_facecolor("#f0f0f0")
    fig.colorbar(image, ax=ax, label="accuracy under this attack run alone (%)", fraction=0.03)
    ax.set_title(f"{protocol_title(entries)}: each attack run's own accuracy (%); blank: not run")
    fig.tight_layout()
    return fig


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # tight: keeps the legends outside the axes in the file
    plt.close(fig)
    return path


def protocol_title(entries: list[dict[str, Any]]) -> str:
    return f"{entries[0]['protocol']} (version {entries[0]['protocol_version']})"


def cost_figure(entries: list[dict[str, Any]]) -> Figure:
    """Robust accuracy (95% Wilson intervals) against forward cost (block evaluations) and against
    parameter count; colour = model family, marker = recipe. Each point is labelled with its row number
    in the table (points that coincide share one label, "3, 5, 8") and a key beside the axes names them."""
    style = styles(entries)
    rows = ordered(entries)
    number = {e["defense"]: i + 1 for i, e in enumerate(rows)}
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.6), sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    sizes = [e["n_parameters"] for e in entries]
    log_sizes = max(sizes) > 10 * min(sizes)
    for e in rows:
        robust = 100 * e["robust_accuracy"]
        below, above = wilson_error(e["robust_accuracy"], e["n_examples"])
        s = style[e["defense"]]
        for ax, x in ((axes[0], e["forward_cost"] or 0.0), (axes[1], e["n_parameters"])):
            ax.errorbar([x], [robust], yerr=[[below], [above]], color=s.colour, marker=s.marker, capsize=2, alpha=0.85)
    costs = [e["forward_cost"] or 0.0 for e in rows]
    axes[0].set_xlim(min(0.0, *costs), 1.15 * max(costs) + 1)
    for ax, key, scale in (
        (axes[0], "forward_cost", "linear"),
        (axes[1], "n_parameters", "log" if log_sizes else "linear"),
    ):
        points = [(float(e[key] or 0.0), 100 * e["robust_accuracy"], number[e["defense"]]) for e in rows]
        groups = label_groups(points, scale == "log")
        place_labels(ax, [(x, y, ", ".join(map(str, numbers))) for x, y, numbers in groups], [p[:2] for p in points])
    axes[0].set_xlabel("forward cost (block evaluations per example in a clean forward)")
    if log_sizes:
        axes[1].set_xscale("log")
        axes[1].xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axes[1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[1].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    axes[1].set_xlabel("parameters" + (" (log scale)" if log_sizes else ""))
    axes[0].set_ylabel("robust accuracy (%)")
    for ax in axes:
        ax.set_ylim(-5.0, 100)
        ax.grid(alpha=0.3)
    key_legend(fig, entries, style)
    key = "\n".join(f"{number[e['defense']]:>2}  {e['defense']}" for e in rows)
    fig.text(1.13, 0.95, "point labels\n(table rows)\n" + key, va="top", ha="left", fontsize=7, family="monospace")
    fig.suptitle(f"{protocol_title(entries)}: robustness against cost (bars: 95% Wilson intervals)")
    fig.tight_layout()
    return fig


def place_labels(ax: Any, labels: list[tuple[float, float, str]], points: list[tuple[float, float]]) -> None:
    """Each label beside its point, on the first side (right, left, above, below) where it stays inside the
    axes and covers no label placed before it and no point but its own (measured in display space)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    markers = [ax.transData.transform(p) for p in points]
    boxes: list[Any] = []
    sides = [((6, 0), "left", "center"), ((-6, 0), "right", "center"), ((0, 7), "center", "bottom"),
             ((4, 7), "left", "bottom"), ((-4, 7), "right", "bottom"), ((0, -7), "center", "top")]  # fmt: skip
    backing = {"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8}
    for x, y, text in labels:
        own = ax.transData.transform((x, y))
        for offset, ha, va in sides:
            label = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", fontsize=7, ha=ha, va=va,
                                zorder=5, bbox=backing)  # fmt: skip
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            covered = any(box.contains(*m) for m in markers if (m != own).any())
            fits = inside.x0 <= box.x0 and box.x1 <= inside.x1 and box.y1 <= inside.y1
            if fits and not covered and not any(box.overlaps(b) for b in boxes):
                break
            if (offset, ha, va) != sides[-1]:
                label.remove()
        label.set_in_layout(False)  # a label past the last point must not squeeze the axes
        boxes.append(box)


def label_groups(
    points: list[tuple[float, float, int]], log_x: bool = False, x_near: float = 0.06, y_near: float = 4.0
) -> list[tuple[float, float, list[int]]]:
    """(x, y, numbers): points closer than ``x_near`` of the x range (in log10 on a log axis) and ``y_near``
    percentage points gathered under one label at their topmost point, so that no two labels overlap."""

    def position(x: float) -> float:
        return float(np.log10(max(x, 1e-12))) if log_x else x

    xs = [position(x) for x, _, _ in points]
    span = (max(xs) - min(xs)) or 1.0
    groups: list[tuple[float, float, list[int]]] = []
    for x, y, n in sorted(points, key=lambda p: (-p[1], p[2])):
        for i, (gx, gy, numbers) in enumerate(groups):
            close_x = abs(position(gx) - position(x)) < x_near * span
            if close_x and abs(gy - y) < y_near:
                groups[i] = (gx, gy, [*numbers, n])
                break
        else:
            groups.append((x, y, [n]))
    return [(x, y, sorted(numbers)) for x, y, numbers in groups]


def facets(entries: list[dict[str, Any]], limit: int = PANEL_SERIES) -> list[tuple[str, list[dict[str, Any]]]]:
    """(panel title, entries): one panel per model family (its federated entries apart), split
    further so no panel has more than ``limit`` series."""

    def panel(e: dict[str, Any]) -> str:
        return e["model_family"] + (", federated" if recipe(e) == "federated" else "")

    out = []
    for name in sorted({panel(e) for e in entries}):
        group = sorted((e for e in entries if panel(e) == name), key=lambda e: e["defense"])
        parts = [group[i : i + limit] for i in range(0, len(group), limit)]
        for k, part in enumerate(parts):
            out.append((name if len(parts) == 1 else f"{name} ({k + 1}/{len(parts)})", part))
    return out


def panel_styles(group: list[dict[str, Any]], style: dict[str, Style]) -> dict[str, Style]:
    """Within a panel of one model family the family is the panel's title: colour tells its
    defenses apart instead, marker stays the recipe."""
    return {
        e["defense"]: Style(PANEL_COLOURS[i % len(PANEL_COLOURS)], style[e["defense"]].marker, "-")
        for i, e in enumerate(group)
    }


def line(ax: Any, xs: list[float], ys: list[float], s: Style, label: str, semilog: bool = False) -> None:
    plot = ax.semilogy if semilog else ax.plot
    plot(xs, ys, color=s.colour, marker=s.marker, linestyle=s.line, label=label, markersize=4, markevery=3)


def eps_figure(entries: list[dict[str, Any]]) -> Figure | None:
    """Robust accuracy against eps (the protocol's eps sweep), one panel per model family, one
    line per defense (marker = recipe, line style = variant), 95% Wilson bars."""
    swept = [e for e in entries if e["eps_sweep"] and len(e["eps_sweep"]["points"]) >= 2]
    if not swept:
        return None
    style = styles(entries)
    panels = facets(swept)
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), sharey=True, squeeze=False)
    for ax, (title, group) in zip(axes.flat, panels, strict=False):
        colours = panel_styles(group, style)
        for e in group:
            points = sorted((p["eps"], p["robust_accuracy"]) for p in e["eps_sweep"]["points"])
            xs, accs = [x for x, _ in points], [a for _, a in points]
            errors = np.array([wilson_error(a, e["n_examples"]) for a in accs]).T
            s = colours[e["defense"]]
            ax.errorbar(xs, [100 * a for a in accs], yerr=errors, color=s.colour, marker=s.marker, linestyle=s.line,
                        label=e["defense"], markersize=4, capsize=2, linewidth=1.2)  # fmt: skip
        ax.axvline(entries[0]["threat_model"]["eps"], color="grey", linestyle=":", linewidth=1)
        eps_axis(ax, sorted({p["eps"] for e in group for p in e["eps_sweep"]["points"]}))
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_xlabel(f"eps ({entries[0]['threat_model']['norm']}, log scale; ticks: the swept values)")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"robust accuracy under {', '.join(swept[0]['eps_sweep']['attacks'])} (%)")
    fig.suptitle(f"{protocol_title(entries)}: robust accuracy against eps (dotted: the protocol's eps)")
    fig.tight_layout()
    return fig


def eps_axis(ax: Any, values: list[float]) -> None:
    """A log eps axis (a symlog one when 0 is swept) ticked at exactly the swept values, so that a reader
    sees where the measurements are and a line between two far-apart values does not pass for data."""
    positive = [v for v in values if v > 0]
    if positive and len(positive) < len(values):
        ax.set_xscale("symlog", linthresh=min(positive))
    elif positive:
        ax.set_xscale("log")
    ax.set_xticks(values, [f"{v:g}" for v in values], fontsize=8)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def residual_figure(entries: list[dict[str, Any]]) -> Figure | None:
    """Mean relative solver residual against solver step, clean (left) versus adversarial (right)
    inputs; one row of panels per model family (split when it has many entries), one line per
    DEQ entry (None when no entry has a solver)."""
    deqs = [e for e in entries if e["solver"] is not None and e["solver"]["residual_trace_clean"]]
    if not deqs:
        return None
    style = styles(entries)
    panels = facets(deqs)
    fig, axes = plt.subplots(len(panels), 2, figsize=(10.0, 3.0 * len(panels)), sharey=True, squeeze=False)
    for row, (title, group) in zip(axes, panels, strict=True):
        colours = panel_styles(group, style)
        for ax, key, side in (
            (row[0], "residual_trace_clean", "clean inputs"),
            (row[1], "residual_trace_adversarial", "adversarial inputs"),
        ):
            for e in group:
                trace = e["solver"][key]
                line(ax, list(range(1, len(trace) + 1)), trace, colours[e["defense"]], e["defense"], semilog=True)
            ax.axhline(group[0]["solver"]["settings"]["f_tol"], color="grey", linestyle=":", linewidth=1)
            ax.set_title(f"{title}: {side}", fontsize=10)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("mean relative residual")
        row[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    for ax in axes[-1]:
        ax.set_xlabel("solver step")
    fig.suptitle(f"{protocol_title(entries)}: forward solver convergence, |f(z) - z| / |f(z)| (dotted: f_tol)")
    fig.tight_layout()
    return fig


def federated_figure(entries: list[dict[str, Any]]) -> Figure | None:
    """The federated entries over communication rounds: the fused model's monitored clean and
    PGD accuracy, and the bytes sent so far (None when no entry is federated)."""
    federated = [e for e in entries if e.get("federated")]
    if not federated:
        return None
    style = styles(entries)
    palette = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 3.8))
    for i, e in enumerate(sorted(federated, key=lambda e: e["defense"])):
        # Colour per defense here: every federated entry is the same family and recipe.
        colour, marker = palette(i % 10), style[e["defense"]].marker
        rounds = e["federated"]["rounds"]
        steps = [r["round"] for r in rounds]
        axes[0].plot(
            steps, [100 * (r["clean_accuracy"] or 0.0) for r in rounds], marker=marker, color=colour, label=e["defense"]
        )
        axes[0].plot(
            steps, [100 * (r["pgd_accuracy"] or 0.0) for r in rounds], marker="x", linestyle="--", color=colour
        )
        sent, total = [], 0
        for r in rounds:
            total += r["bytes_to_clients"] + r["bytes_to_server"]
            sent.append(total / 1e6)
        axes[1].plot(steps, sent, marker=marker, color=colour, label=e["defense"])
    axes[0].set_ylabel("fused model accuracy (%)")
    kinds = [
        Line2D([], [], color="#444", marker="o", label="clean"),
        Line2D([], [], color="#444", marker="x", linestyle="--", label="PGD"),
    ]
    axes[0].legend(handles=kinds, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    axes[0].set_ylim(0, 100)
    axes[1].set_ylabel("bytes sent, cumulative (MB)")
    for ax in axes:
        ax.set_xlabel("communication round")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle(f"{protocol_title(entries)}: federated training ({federated[0]['federated']['monitor']})", fontsize=9)
    fig.tight_layout()
    return fig


KNOB_SETTINGS = ("depth", "channels", "density")


def knob_figure(entries: list[dict[str, Any]]) -> Figure | None:
    """Clean and robust accuracy against each model setting that varies within a family (sweeps).

    Each point averages the entries that share that knob value; None when nothing varies.
    """
    panels = []
    for family in sorted({e["model_family"] for e in entries}):
        group = [e for e in entries if e["model_family"] == family]
        for knob in KNOB_SETTINGS:
            values = sorted({e["model_settings"].get(knob) for e in group if knob in e["model_settings"]})
            if len(values) >= 2:
                panels.append((family, knob, values, group))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4), squeeze=False)
    for ax, (family, knob, values, group) in zip(axes[0], panels, strict=True):
        for key, label in (("clean_accuracy", "clean"), ("robust_accuracy", "robust (worst case)")):
            means = []
            for value in values:
                picked = [e[key] for e in group if e["model_settings"].get(knob) == value]
                means.append(100 * sum(picked) / len(picked))
            ax.plot(values, means, marker="o", label=label)
        ax.set_xlabel(f"{knob} ({family})")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle(f"{protocol_title(entries)}: accuracy against each knob (mean over the other knobs)")
    fig.tight_layout()
    return fig


@functools.cache
def report_templates() -> Environment:
    """The report's templates (``robustdeq/report/templates``), with the leaderboard's layout and macros."""
    return template_environment("robustdeq.report", "robustdeq.leaderboard")


def claim_row(finding: Finding) -> dict[str, str]:
    """One row of a protocol's claims table in report.html (the columns of
    :func:`robustdeq.report.claims.markdown_section`)."""
    c = finding.claim
    return {
        "paper": c.paper,
        "text": c.text,
        "pair": f"{c.first} vs {c.second}",
        "measure": expectation(c),
        "first": claim_value(finding, "first"),
        "second": claim_value(finding, "second"),
        "difference": claim_difference(finding),
        "p": p_value(finding),
        "verdict": finding.verdict,
        "note": finding.note or "-",
    }


def claims_context(findings: list[Finding]) -> dict[str, Any]:
    """What report.html shows of the claims: the protocols, the summary (one row per claim, a
    (verdict, detail) cell per protocol) and each protocol's table."""
    protocols, summary = summary_rows(findings)
    return {
        "summary_headers": [(h, "") for h in ("claim", "first vs second", "measure", *protocols)],
        "summary": [
            {
                "paper": c.paper,
                "text": c.text,
                "pair": f"{c.first} vs {c.second}",
                "measure": expectation(c),
                "cells": cells,
            }
            for c, cells in summary
        ],  # fmt: skip
        "sections": [(p, [claim_row(f) for f in findings if f.protocol == p]) for p in protocols],
    }


def write_report(
    root: Path,
    out: Path,
    protocols: list[str] | None = None,
    claims: Path = CLAIMS_FILE,
    benchmarks: Path = BENCHMARK_RESULTS,
) -> list[Path]:
    """Write ``report.md``, ``report.html`` and PNG figures per protocol into ``out``, then the seed
    papers' claims (``claims``) tested on every protocol's entries under ``root`` and, for timings, on
    the benchmark results in ``benchmarks``. A protocol's numbers published elsewhere (its folder's
    ``published.toml``) follow its table, never ranked with the entries; a protocol with published
    numbers and no entries yet gets a section that says so, with those numbers."""
    folders = [root / p for p in protocols] if protocols else sorted(protocol_folders(root) + published_only(root))
    if not folders:
        raise RobustdeqError(f"{root}: no entries (no <protocol>/ folder holding a <defense>.json)")
    md = ["# robustdeq report", ""]
    sections: list[dict[str, Any]] = []
    written = []
    for folder in folders:
        entries = shown_entries(folder)
        published = read_published(folder)
        if not entries and published is not None:
            caption = " ".join(filter(None, (protocol_line(folder.name), f"{NO_ENTRIES_YET}.")))
            md += [f"## {folder.name}", "", caption, "", published_section(published, level=3)]
            sections.append({"name": folder.name, "caption": caption, "columns": [], "rows": [], "figures": [],
                             "published": published_context(published)})  # fmt: skip
            continue
        frame = headline(entries, links=False)
        figures = [
            save(accuracy_figure(entries), out / f"{folder.name}-accuracy.png"),
            save(attacks_figure(entries), out / f"{folder.name}-attacks.png"),
            save(cost_figure(entries), out / f"{folder.name}-cost.png"),
        ]
        optional_figures = (
            ("eps", eps_figure(entries)),
            ("residual", residual_figure(entries)),
            ("knobs", knob_figure(entries)),
            ("federated", federated_figure(entries)),
        )
        for name, optional in optional_figures:
            if optional is not None:
                figures.append(save(optional, out / f"{folder.name}-{name}.png"))
        written.extend(figures)
        first = entries[0]
        tm = first["threat_model"]
        caption = (
            f"{len(entries)} defenses, data set {first['dataset']}, {tm['norm']} eps = {tm['eps']}, "
            f"{first['n_examples']} examples, protocol version {first['protocol_version']}."
        )
        md += [f"## {folder.name}", "", caption, "", markdown(frame), "", legend(ranked(entries)[0]), ""]
        md += [f"![{figure.stem}]({figure.name})\n" for figure in figures]
        if published is not None:
            md += [published_section(published, level=3)]
        columns, rows = dataframe_cells(frame)
        sections.append(
            {
                "name": folder.name,
                "caption": caption,
                "columns": columns,
                "rows": rows,
                "figures": [(f.stem, base64.b64encode(f.read_bytes()).decode("ascii")) for f in figures],
                "published": published_context(published),
            }
        )
    every = {
        folder.name: {e["defense"]: best_known(e) for e in read_entries(folder)} for folder in protocol_folders(root)
    }
    findings = assess_all(load_claims(claims), every, benchmarks)
    md += ["", markdown_section(findings)]
    template = report_templates().get_template("report.html")
    page = template.render(title="robustdeq report", protocols=sections, claims=claims_context(findings))
    atomic_write_text(out / "report.md", "\n".join(md))
    atomic_write_text(out / "report.html", page)
    return [out / "report.md", out / "report.html", *written]
