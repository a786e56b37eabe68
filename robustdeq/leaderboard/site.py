"""A browsable static site of the leaderboard, read from the JSON entries (``robustdeq site``).

Pages, all plain HTML that works from the file system (``file://``), with nothing fetched from
elsewhere (no external scripts, fonts, styles or images)::

    index.html              the protocols: threat model, data set, examples, version, entries
    sort.js                 click-to-sort for the tables (the one script)
    <protocol>/index.html   the ranked table (rank groups of robustdeq.leaderboard.ranking),
                            its legend, the numbers published elsewhere (the folder's
                            published.toml, never ranked with the entries), and the report's
                            figures when given; a folder with published numbers and no
                            entries yet gets this page too, saying so
    <protocol>/<defense>.html   one entry: every attack run, checks, the eps sweep (inline SVG, log eps),
                            flags, solver statistics, fidelity, the paper's own evaluation,
                            provenance

The pages are Jinja2 templates (``templates/site/``, autoescaped; layout ``site/base.html``, shared
macros ``templates/macros.html``): this module computes what they show, as text and formatted
numbers, and never builds markup itself.

Entries of schema version 1 lack ``per_example``, ``fidelity``, ``paper_evaluation`` and
``provenance.command`` / ``checkpoint`` / ``device``: those show as not recorded, and their rank
comparisons are unpaired (the legend says so).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard.headline import (
    BEST_KNOWN,
    BEST_KNOWN_MEANING,
    DEVIATES,
    DEVIATES_MEANING,
    GPU,
    GPU_MEANING,
    MISSING,
    SEEDS,
    SEEDS_MEANING,
    STATUS_MARKERS,
    STATUS_MEANINGS,
    autoattack,
    comparable,
    first_broken,
    interval,
    markers,
    pct,
    recipe,
    seed_list,
    seed_measured_apart,
    seed_spread,
    shown_entries,
    strongest,
    version_key,
)
from robustdeq.leaderboard.ranking import ALPHA, Ranked, order_key, rank_groups
from robustdeq.leaderboard.render import NO_ENTRIES_YET, known_protocol, published_context, templates
from robustdeq.leaderboard.stats import wilson
from robustdeq.records.entry import split_checks
from robustdeq.records.flags import FLAGS, kind
from robustdeq.records.outcomes import decode_indices
from robustdeq.records.published import PublishedFile, published_only, read_published
from robustdeq.records.store import atomic_write_text, copy_atomically, protocol_folders

NOT_RECORDED = "not recorded (schema version 1 entry)"

# Click a header to sort by its column, again to reverse. A cell's data-sort, when present, is its
# key; headers with data-type="num" sort numerically; empty keys and "-" stay last either way.
# The URL fragment #sort=<column> (#sort=-<column>: descending) sorts the first table on load.
SORT_JS = """\
"use strict";
(function () {
  function key(row, column, numeric) {
    var cell = row.cells[column];
    var text = (cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent).trim();
    if (text === "" || text === "-") return null;
    if (!numeric) return text.toLowerCase();
    var value = parseFloat(text);
    return isNaN(value) ? null : value;
  }
  function sortBy(table, column, descending) {
    var header = table.tHead.rows[0].cells[column];
    var numeric = header.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, column, numeric), y = key(b, column, numeric);
      if (x === null || y === null) return (x === null) - (y === null);
      var order = numeric ? x - y : x.localeCompare(y);
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    table.setAttribute("data-sorted", String(column));
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      th.addEventListener("click", function () {
        sortBy(table, column, th.getAttribute("aria-sort") === "ascending");
      });
    });
  });
  var match = /^#sort=(-?)(\\d+)$/.exec(window.location.hash);
  if (match && tables.length && Number(match[2]) < tables[0].tHead.rows[0].cells.length) {
    sortBy(tables[0], Number(match[2]), match[1] === "-");
  }
})();
"""


def write_site(root: Path, out: Path, report_figures: dict[str, list[Path]] | None = None) -> list[Path]:
    """Write the site of every protocol under ``root`` into ``out``; returns the files written.

    ``report_figures`` maps a protocol (its folder name) to PNG figures, e.g. those of
    ``robustdeq report``: they are copied into ``out/<protocol>/`` and shown below its table.
    """
    folders = protocol_folders(root)
    waiting = published_only(root)  # published numbers, no entries yet
    figures = report_figures or {}
    unknown = sorted(set(figures) - {f.name for f in folders})
    if unknown:
        raise RobustdeqError(f"figures given for protocols without entries under {root}: {', '.join(unknown)}")
    written = [out / "sort.js"]
    atomic_write_text(out / "sort.js", SORT_JS)
    summaries = []
    for folder in folders:
        entries = shown_entries(folder)
        if any(e["defense"] == "index" for e in entries):
            raise RobustdeqError(f"{folder}: a defense named 'index' would replace the table page")
        ranked = ranked_apart(entries)
        copied = []
        for figure in figures.get(folder.name, []):
            copy_atomically(figure, out / folder.name / figure.name)
            copied.append(out / folder.name / figure.name)
        written.extend(copied)
        for r in ranked:
            path = out / folder.name / f"{r.entry['defense']}.html"
            atomic_write_text(path, entry_page(r, folder.name))
            written.append(path)
        table_path = out / folder.name / "index.html"
        published = read_published(folder)
        atomic_write_text(table_path, protocol_page(ranked, folder.name, [p.name for p in copied], published))
        written.append(table_path)
        summaries.append((folder.name, ranked))
    for folder in waiting:
        table_path = out / folder.name / "index.html"
        atomic_write_text(table_path, protocol_page([], folder.name, [], read_published(folder)))
        written.append(table_path)
        summaries.append((folder.name, []))
    atomic_write_text(out / "index.html", index_page(sorted(summaries, key=lambda s: s[0])))
    written.append(out / "index.html")
    return written


def ranked_apart(entries: list[dict[str, Any]]) -> list[Ranked]:
    """The rank groups of the entries sharing the majority's protocol version and number of examples
    (:func:`robustdeq.leaderboard.headline.comparable`), then the others, unranked."""
    main, apart = comparable(entries)
    ranked = rank_groups(main)
    return ranked + [
        Ranked(e, len(ranked) + i + 1, None, MISSING, None, None) for i, e in enumerate(sorted(apart, key=order_key))
    ]


def report_figures_in(folder: Path, protocols: list[str]) -> dict[str, list[Path]]:
    """The PNG figures ``robustdeq report`` wrote into ``folder`` (``<protocol>-<figure>.png``), per protocol."""
    if not folder.is_dir():
        raise RobustdeqError(f"{folder}: no such report folder")
    found: dict[str, list[Path]] = {}
    for protocol in protocols:
        # A figure's own name has no hyphen, so digits-linf-x-cost.png is not digits-linf's.
        pngs = [p for p in sorted(folder.glob(f"{protocol}-*.png")) if "-" not in p.stem[len(protocol) + 1 :]]
        if pngs:
            found[protocol] = pngs
    return found


# ---------------------------------------------------------------- formatting
# What the templates (robustdeq/leaderboard/templates/site/) print: text and numbers as strings,
# never markup; the templates lay them out and escape them.


def count(accuracy: float, n: int) -> int:
    return round(accuracy * n)


def with_interval(accuracy: float, n: int, sort: bool = False, seeds: str | None = None) -> dict[str, str | None]:
    """A percentage and its 95% Wilson interval; ``sort``: with the accuracy as the cell's sort key;
    ``seeds``: the training-seed spread shown below them (:func:`~robustdeq.leaderboard.headline.seed_spread`)."""
    out = {"pct": pct(accuracy), "interval": interval(accuracy, n), "seeds": seeds}
    return out | {"sort": str(accuracy)} if sort else out


def settings(values: Any) -> str:
    """``key=value`` pairs (nested values as compact JSON)."""
    if not isinstance(values, dict):
        return str(values)
    if not values:
        return MISSING
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items())


def threat_model(entry: dict[str, Any]) -> str:
    tm = entry["threat_model"]
    return f"{tm['norm']} eps = {tm['eps']:g}"


def page(template: str, **context: Any) -> str:
    return templates().get_template(f"site/{template}").render(**context)


# ---------------------------------------------------------------- index page


def index_page(summaries: list[tuple[str, list[Ranked]]]) -> str:
    protocols = []
    for protocol, ranked in summaries:
        if not ranked:  # published numbers only: the protocol's own file says what it is
            protocols.append(waiting_summary(protocol))
            continue
        first = ranked[0].entry
        best = first if ranked[0].group is not None else None
        protocols.append(
            {
                "name": protocol,
                "href": f"{quote(protocol)}/index.html",
                "threat_model": threat_model(first),
                "dataset": first["dataset"],
                "n_examples": str(first["n_examples"]),
                "version": str(first["protocol_version"]),
                "hash": first["protocol_hash"][:8],
                "entries": str(len(ranked)),
                "best": None if best is None else {"robust": pct(best["robust_accuracy"]), "defense": best["defense"]},
            }
        )
    return page("index.html", protocols=protocols)


def waiting_summary(protocol: str) -> dict[str, Any]:
    """The index row of a protocol with no entries yet, from ``attacks/<protocol>.toml`` where it is known."""
    spec = known_protocol(protocol)
    return {
        "name": protocol,
        "href": f"{quote(protocol)}/index.html",
        "threat_model": MISSING if spec is None else f"{spec.threat.norm} eps = {spec.threat.eps:g}",
        "dataset": MISSING if spec is None else spec.dataset,
        "n_examples": MISSING if spec is None else str(spec.n_examples),
        "version": MISSING if spec is None else str(spec.version),
        "hash": "" if spec is None else spec.hash[:8],
        "entries": "0",
        "best": None,
    }


# ---------------------------------------------------------------- protocol page

COLUMNS = [
    ("rank", "num", "num", "rank group: entries not significantly worse than the group's best share it"),
    ("letters", "", "text", "entries that share a letter are not significantly different; sharing none: different"),
    ("defense", "", "text", "the defense id; its page has every number"),
    ("model", "", "text", "registered model family"),
    ("recipe", "", "text", "training recipe"),
    ("clean %", "num", "num", "accuracy on clean inputs [95% Wilson interval]"),
    ("robust %", "num", "num", "worst case over every attack run [95% Wilson interval]"),
    ("AutoAttack %", "num", "num", "AutoAttack's own accuracy"),
    ("strongest attack", "", "text", "the attack run with the lowest accuracy, and that accuracy"),
    ("params", "num", "num", "parameters"),
    ("block evals", "num", "num", "forward cost: block (cell) evaluations per example in a clean forward"),
    ("status", "", "text", "flags and markers, see the legend"),
]


def table_row(r: Ranked, previous: Ranked | None) -> dict[str, Any]:
    """One row; ``previous`` is the row above it in table order (a group starts where the group changes)."""
    e = r.entry
    n = e["n_examples"]
    worst = strongest(e)
    classes = ([] if r.group is not None else ["unranked"]) + (
        ["group-start"] if previous is not None and previous.group != r.group else []
    )
    return {
        "classes": " ".join(classes),
        "rank": r.rank,
        "rank_sort": str(r.position) if r.group is not None else "",
        "letters": r.letters,
        "defense": e["defense"],
        "href": f"{quote(e['defense'])}.html",
        "defense_name": e["defense_name"],
        "model_family": e["model_family"],
        "recipe": recipe(e),
        "clean": with_interval(e["clean_accuracy"], n, sort=True),
        "robust": with_interval(e["robust_accuracy"], n, sort=True, seeds=seed_spread(e)),
        "autoattack": pct(autoattack(e)),
        "strongest": None if worst is None else {"name": worst[0], "pct": pct(worst[1])},
        "params": f"{e['n_parameters']:,}",
        "params_sort": str(e["n_parameters"]),
        "forward_cost": MISSING if e["forward_cost"] is None else f"{e['forward_cost']:.1f}",
        "flags": ", ".join(f"{f} ({kind(f, e['flags'])})" for f in e["flags"]) or "no flags",
        "markers": [(m, m.startswith("⚠")) for m, _ in markers(e)],
    }


def legend(ranked: list[Ranked]) -> list[tuple[str, str]]:
    """The legend below the table: (term, meaning)."""
    n = ranked[0].entry["n_examples"]
    in_groups = [r for r in ranked if r.group is not None]
    unpaired = [r.entry["defense"] for r in in_groups if "per_example" not in r.entry]
    items = [
        (
            "rank",
            "Entries are ordered by robust accuracy, then clean accuracy. A rank group starts at the best entry not "
            "yet ranked and takes the entries below it, in order, until the first one significantly worse than that "
            "best entry: exact McNemar test on the paired per-example robust outcomes, Holm-corrected over the "
            f"comparisons with the group's best, alpha {ALPHA}. The rank shows the group's first and last position "
            "(e.g. 2-8); a thicker line separates the groups. A group is cut where its best entry is significantly "
            "better, so neighbours in different groups can be indistinguishable from each other: the letters say "
            "which.",
        ),
        (
            "letters",
            "Every pair compared: each entry against every entry below it (the same test), Holm-corrected over that "
            "entry's comparisons (for a group's best entry, the comparisons that cut the groups). Entries that share "
            "a letter are not significantly different; entries that share none are. A group's best entry shares no "
            "letter with the first entry of the next group, but an entry near the cut can share one with entries of "
            "both groups (a compact letter display, Piepho 2004).",
        ),
    ]
    if unpaired and len(in_groups) > 1:  # then each of them took part in at least one comparison
        which = ", ".join(unpaired) if len(unpaired) <= 5 else f"{len(unpaired)} of the {len(in_groups)} ranked"
        items.append(
            (
                "unpaired",
                f"Entries without per-example outcomes (schema version 1: {which}) cannot be paired: comparisons "
                "involving them use the unpaired two-proportion test (robustdeq.leaderboard.stats."
                "unpaired_difference), which is conservative when the examples are shared.",
            )
        )
    items += [
        ("-", "not ranked: a flag of class overestimate or not-comparable; listed after the ranked entries"),
    ]
    apart = [r.entry for r in ranked if version_key(r.entry) != version_key(ranked[0].entry)]
    if apart:
        listed = ", ".join(f"{e['defense']} (version {e['protocol_version']}, n = {e['n_examples']})" for e in apart)
        items.append(
            (
                "apart",
                f"Evaluated under another protocol version or on another number of examples than the rest: {listed}. "
                "Not ranked with the others (re-run them).",
            )
        )
    items += [
        (
            "clean %, robust %",
            f"percent of the {n} test examples correct on the clean input / on the clean input and after every "
            "attack run (the per-example worst case), with the 95% Wilson score interval in brackets",
        ),
        ("AutoAttack %", "AutoAttack's own accuracy (the worst of its runs)"),
        ("strongest attack", "the attack run with the lowest accuracy on its own, with that accuracy"),
        ("block evals", "block (cell) evaluations per example in a clean forward; for explicit models the blocks"),
    ]
    items += [
        (STATUS_MARKERS[k], STATUS_MEANINGS[k]) for k in ("overestimate", "not-comparable", "informational", "ok")
    ]
    items += [(DEVIATES, DEVIATES_MEANING), (GPU, GPU_MEANING), (BEST_KNOWN, BEST_KNOWN_MEANING)]
    if any("seed_spread" in r.entry for r in ranked):
        items.append((SEEDS, SEEDS_MEANING))
    return items


def protocol_page(
    ranked: list[Ranked], protocol: str, figures: list[str], published: PublishedFile | None = None
) -> str:
    """The protocol's page: its ranked table and legend, then the numbers published elsewhere; with no
    entries yet (``ranked`` empty), the protocol as ``attacks/<protocol>.toml`` has it and a line saying so."""
    if ranked:
        first = ranked[0].entry
        header = {
            "version": str(first["protocol_version"]),
            "dataset": first["dataset"],
            "threat_model": threat_model(first),
            "n_examples": str(first["n_examples"]),
            "hash": first["protocol_hash"][:12],
        }
    else:
        summary = waiting_summary(protocol)
        header = {key: summary[key] for key in ("version", "dataset", "threat_model", "n_examples", "hash")}
    return page(
        "protocol.html",
        protocol=protocol,
        **header,
        entries=str(len(ranked)),
        no_entries=None if ranked else NO_ENTRIES_YET,
        columns=COLUMNS,
        rows=[table_row(r, ranked[i - 1] if i else None) for i, r in enumerate(ranked)],
        legend=legend(ranked) if ranked else [],
        figures=[(quote(name), name) for name in figures] if ranked else [],
        published=published_context(published),
    )


# ---------------------------------------------------------------- entry page


def chart(
    points: list[tuple[float, float]], x_label: str, y_label: str, marker: float | None = None, marker_label: str = ""
) -> dict[str, Any]:
    """The geometry of :func:`line_chart`, numbers formatted, for the ``line_chart`` macro: x on a log
    scale (:func:`log_scale`) ticked at exactly the points' x values, as the report's eps axis is."""
    width, height, left, right, top, bottom = 440, 250, 56, 16, 12, 46
    xs = sorted({x for x, _ in points})
    shown = [*xs, *([] if marker is None else [marker])]
    decades = log_scale(shown)
    low, high = decades(min(shown)), decades(max(shown))
    plot_w, plot_h = width - left - right, height - top - bottom
    pad = 0.05 * (high - low) or 0.5  # keeps the end points off the frame (one value: in the middle)

    def sx(x: float) -> float:
        return left + plot_w * (decades(x) - low + pad) / (high - low + 2 * pad)

    def sy(y: float) -> float:
        return top + plot_h * (1 - y / 100)

    return {
        "width": str(width),
        "height": str(height),
        "x_label": x_label,
        "y_label": y_label,
        "left": str(left),
        "right": str(width - right),
        "top": str(top),
        "bottom": str(top + plot_h),
        "grid": [
            {"y": f"{sy(level):.1f}", "label_y": f"{sy(level) + 4:.1f}", "label": str(level)}
            for level in (0, 25, 50, 75, 100)
        ],
        "grid_label_x": str(left - 6),
        "ticks": [{"x": f"{sx(x):.1f}", "label": f"{x:g}"} for x in xs],
        "tick_end": str(top + plot_h + 4),
        "tick_label_y": str(top + plot_h + 16),
        "x_label_x": f"{left + plot_w / 2:.1f}",
        "x_label_y": str(height - 6),
        "y_label_y": f"{top + plot_h / 2:.1f}",
        "marker": None if marker is None else {"x": f"{sx(marker):.1f}", "label": marker_label},
        "path": " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points),
        "points": [{"cx": f"{sx(x):.1f}", "cy": f"{sy(y):.1f}", "title": f"{x:g}: {y:.1f}%"} for x, y in points],
    }


def line_chart(
    points: list[tuple[float, float]], x_label: str, y_label: str, marker: float | None = None, marker_label: str = ""
) -> str:
    """An inline SVG line chart of ``points`` (x >= 0 on a log scale, y in percent, 0-100) with labelled
    axes, a dot at every point and a tick at every x; ``marker`` draws a dotted vertical line at that x."""
    macro = templates().get_template("macros.html").module.line_chart  # type: ignore[attr-defined]
    return str(macro(chart(points, x_label, y_label, marker, marker_label)))


def log_scale(values: list[float]) -> Callable[[float], float]:
    """Where a value >= 0 sits on a log axis for ``values``, in decades: log10; when 0 is among them,
    symlog (linear from 0 to the smallest positive value, which is one decade wide, log above it), as
    matplotlib's ``symlog`` with ``linthresh`` at that value (the report's eps axis). A log axis shows
    where measurements are: swept values such as 0.05, 0.1, 0.2, 0.3, 1 crowd together on a linear one."""
    if any(v < 0 for v in values):
        raise ValueError(f"a log axis for values >= 0, got {min(values)}")
    positive = [v for v in values if v > 0]
    if not positive:
        return lambda x: x
    if len(positive) == len(values):
        return math.log10
    linthresh = min(positive)
    return lambda x: x / linthresh if x < linthresh else 1 + math.log10(x / linthresh)


def attack_runs(e: dict[str, Any]) -> list[dict[str, Any]]:
    n = e["n_examples"]
    broke = first_broken(e)
    seconds = e["provenance"].get("attack_seconds")
    attack_settings = e["provenance"]["attack_settings"]
    worst = strongest(e)
    rows = []
    for name, acc in e["attacks"].items():
        run_settings = {k: v for k, v in attack_settings.get(name, {}).items() if k != "name"}
        rows.append(
            {
                "name": name,
                "strongest": worst is not None and worst[0] == name,
                "pct": pct(acc),
                "interval": interval(acc, n),
                "broke": MISSING if broke is None else str(broke[name]),
                "seconds": MISSING if seconds is None or name not in seconds else f"{seconds[name]:.1f}",
                "settings": settings(run_settings) if name in attack_settings else MISSING,
            }
        )
    return rows


def sweep(e: dict[str, Any]) -> dict[str, Any] | None:
    """The eps sweep's chart and table rows; None without a sweep."""
    eps_sweep = e["eps_sweep"]
    if eps_sweep is None or not eps_sweep["points"]:
        return None
    points = sorted((p["eps"], 100 * p["robust_accuracy"]) for p in eps_sweep["points"])
    eps = e["threat_model"]["eps"]
    geometry = chart(
        points,
        f"eps ({e['threat_model']['norm']}, log scale); dotted: the protocol's eps",
        f"robust accuracy under {', '.join(eps_sweep['attacks'])} (%)",
        marker=eps,
        marker_label=f"the protocol's eps = {eps:g}",
    )
    return {"chart": geometry, "rows": [(f"{x:g}", f"{y:.1f}") for x, y in points]}


def flag_rows(e: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for name in e["flags"]:
        flag = FLAGS.get(name)
        meaning = flag.meaning if flag is not None else "unknown flag (counts as an overestimate)"
        rows.append({"name": name, "kind": kind(name, e["flags"]), "meaning": meaning})
    return rows


Row = tuple[str, Any, str]  # (key, value, style) of the kv_rows macro: style "", "code", "prose" or "link"


def solver_rows(e: dict[str, Any]) -> list[Row] | None:
    solver = e["solver"]
    if solver is None:
        return None

    def trace(values: list[float]) -> str:
        if not values:
            return MISSING
        return f"{values[0]:.2e} after step 1, {values[-1]:.2e} after step {len(values)}"

    rows = [
        ("settings", settings(solver["settings"])),
        ("attack gradient modes", ", ".join(solver["attack_grad_modes"])),
        ("not converged, clean", f"{100 * solver['nonconverged_clean']:.2f} % of forward solves"),
        ("not converged, adversarial", f"{100 * solver['nonconverged_adversarial']:.2f} % of forward solves"),
        ("mean solver steps, clean", f"{solver['mean_steps_clean']:.1f}"),
        ("mean solver steps, adversarial", f"{solver['mean_steps_adversarial']:.1f}"),
        ("spectral radius of J_f(z*)", f"{solver['spectral_radius']:.3f}"),
        ("mean relative residual, clean", trace(solver["residual_trace_clean"])),
        ("mean relative residual, adversarial", trace(solver["residual_trace_adversarial"])),
    ]
    return [(k, v, "") for k, v in rows]


def fidelity_rows(fidelity: dict[str, Any]) -> list[Row]:
    arxiv = fidelity["arxiv"]
    return [
        ("title", fidelity["title"], "prose"),
        ("arXiv", (f"https://arxiv.org/abs/{arxiv}", arxiv), "link") if arxiv else ("arXiv", MISSING, ""),
        ("venue", fidelity["venue"], "prose"),
        ("code", fidelity["code"], "prose"),
        *((key, fidelity[key], "prose") for key in ("data", "architecture", "training", "evaluation", "reported")),
    ]


def paper_evaluation_rows(runs: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {
            "label": r["label"],
            "description": r["description"],
            "pct": pct(r["accuracy"]),
            "settings": settings(r["settings"]),
        }
        for r in runs
    ]


def provenance_rows(e: dict[str, Any]) -> list[Row]:
    prov = e["provenance"]
    commit = prov["git_commit"]
    device = prov.get("device")
    training = prov["training"]
    rows: list[Row] = [
        (
            "versions",
            f"robustdeq {prov['robustdeq_version']}, torch {prov['torch_version']}, Python {prov['python_version']}",
            "",
        ),
        ("git commit", MISSING, "") if commit is None else ("git commit", commit, "code"),
        ("command", prov["command"], "code") if "command" in prov else ("command", NOT_RECORDED, ""),
        ("hardware", str(prov["hardware"]), ""),
        ("device", settings(device) if device is not None else NOT_RECORDED, ""),
        ("seed", str(prov["seed"]), ""),
        ("model settings", settings(e["model_settings"]), ""),
    ]
    if training is None:
        rows.append(("training", "none: a model robustdeq did not train", ""))
    else:
        record = {k: v for k, v in training.items() if k != "recipe_settings"}
        rows.append(("training", settings(record), ""))
        rows.append(("recipe settings", settings(training["recipe_settings"]), ""))
    if "checkpoint" not in prov:
        rows.append(("checkpoint", NOT_RECORDED, ""))
    else:
        rows.append(("checkpoint", "none" if prov["checkpoint"] is None else settings(prov["checkpoint"]), ""))
    rows.append(("reduced budget", "yes" if prov["reduced_budget"] else "no", ""))
    if prov.get("nonstandard"):
        rows.append(("non-standard options", settings(prov["nonstandard"]), ""))
    rows.append(("seconds", f"training {prov['train_seconds']:.1f}, evaluation {prov['eval_seconds']:.1f}", ""))
    return rows


def challenge_rows(e: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """One row per outside attack recorded by ``robustdeq challenge``: who, when, file SHA-256 (short),
    examples submitted, verified breaks, and those robustdeq's own attacks had left robust."""
    return [
        (
            c["by"],
            c["when"],
            c["file_sha256"][:12],
            str(c["submitted"]),
            str(len(c["broken"])),
            ", ".join(map(str, c["new"])) or "none",
        )
        for c in e.get("challenges") or []
    ]


def federated_rows(e: dict[str, Any]) -> list[Row] | None:
    federated = e.get("federated")
    if not federated:
        return None
    return [
        ("fusion", federated["fusion"], ""),
        ("clients", str(federated["clients"]), ""),
        ("training examples per client", ", ".join(map(str, federated["client_examples"])), ""),
        ("communication rounds", str(len(federated["rounds"])), ""),
        ("monitor", federated["monitor"], "prose"),
    ]


def seed_rows(e: dict[str, Any]) -> dict[str, Any] | None:
    """The training-seed spread of the entry's robust accuracy for its page; None without one."""
    spread = e.get("seed_spread")
    if spread is None:
        return None
    robust = spread["robust_accuracy"]
    return {
        "range": f"{pct(robust['min'])}-{pct(robust['max'])} %",
        "seeds": seed_list(spread["seeds"]),
        "mean": pct(robust["mean"]),
        "sd": f"{100 * robust['std']:.1f}",
        "half_width": f"{100 * robust['wilson_half_width']:.1f}",
        "apart": seed_measured_apart(e),
        "per_seed": [
            (seed, pct(a["clean_accuracy"]), pct(a["robust_accuracy"])) for seed, a in spread["per_seed"].items()
        ],
    }


def entry_page(r: Ranked, protocol: str) -> str:
    e = r.entry
    n = e["n_examples"]
    outside = split_checks(e)[1]
    indices = NOT_RECORDED
    if "per_example" in e:
        decoded = decode_indices(e["per_example"]["indices"])
        indices = f"{e['per_example']['indices']} ({len(decoded)} examples)"

    def accuracy(value: float) -> dict[str, str]:
        low, high = wilson(count(value, n), n)
        return {
            "pct": pct(value),
            "low": f"{100 * low:.1f}",
            "high": f"{100 * high:.1f}",
            "count": str(count(value, n)),
        }

    fidelity = e.get("fidelity")
    return page(
        "entry.html",
        protocol=protocol,
        defense=e["defense"],
        defense_name=e["defense_name"],
        dataset=e["dataset"],
        threat_model=threat_model(e),
        n_examples=str(n),
        protocol_version=str(e["protocol_version"]),
        schema_version=str(e["schema_version"]),
        rank=r.rank,
        ranked=r.group is not None,
        clean=accuracy(e["clean_accuracy"]),
        robust=accuracy(e["robust_accuracy"]),
        protocol_robust=accuracy(e["protocol_robust_accuracy"]) if e.get("best_known") else None,
        seeds=seed_rows(e),
        challenges=challenge_rows(e),
        markers=markers(e),
        model_family=e["model_family"],
        recipe=recipe(e),
        parameters=f"{e['n_parameters']:,}",
        forward_cost=MISSING if e["forward_cost"] is None else f"{e['forward_cost']:.1f} block evaluations",
        paper=e["paper"],
        indices=indices,
        attacks=attack_runs(e),
        broke_recorded=first_broken(e) is not None,
        checks=[(name, pct(acc), name not in outside) for name, acc in e["checks"].items()],
        sweep=sweep(e),
        flags=flag_rows(e),
        solver=solver_rows(e),
        federated=federated_rows(e),
        not_recorded=NOT_RECORDED,
        fidelity_recorded="fidelity" in e,
        fidelity=None if fidelity is None else fidelity_rows(fidelity),
        deviations=[] if fidelity is None else fidelity["deviations"],
        paper_evaluation=None if "paper_evaluation" not in e else paper_evaluation_rows(e["paper_evaluation"]),
        provenance=provenance_rows(e),
    )
