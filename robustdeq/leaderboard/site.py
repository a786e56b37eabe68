"""A browsable static site of the leaderboard, read from the JSON entries (``robustdeq site``).

Pages, all plain HTML that works from the file system (``file://``), with nothing fetched from
elsewhere (no external scripts, fonts, styles or images)::

    index.html              the protocols: threat model, data set, examples, version, entries
    sort.js                 click-to-sort for the tables (the one script)
    <protocol>/index.html   the ranked table (rank groups of robustdeq.leaderboard.ranking),
                            its legend, and the report's figures when given
    <protocol>/<defense>.html   one entry: every attack run, checks, the eps sweep (inline SVG),
                            flags, solver statistics, fidelity, the paper's own evaluation,
                            provenance

Entries of schema version 1 lack ``per_example``, ``fidelity``, ``paper_evaluation`` and
``provenance.command`` / ``checkpoint`` / ``device``: those show as not recorded, and their rank
comparisons are unpaired (the legend says so).
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard.headline import (
    DEVIATES,
    DEVIATES_MEANING,
    GPU,
    GPU_MEANING,
    MISSING,
    STATUS_MARKERS,
    STATUS_MEANINGS,
    autoattack,
    comparable,
    first_broken,
    interval,
    markers,
    pct,
    recipe,
    strongest,
    version_key,
)
from robustdeq.leaderboard.ranking import ALPHA, Ranked, order_key, rank_groups
from robustdeq.leaderboard.stats import wilson
from robustdeq.records.flags import FLAGS, kind
from robustdeq.records.outcomes import decode_indices
from robustdeq.records.store import atomic_write_text, copy_atomically, protocol_folders, read_entries

NOT_RECORDED = "not recorded (schema version 1 entry)"

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 margin:1.2em auto;max-width:1240px;padding:0 1em;color:#1f2328;line-height:1.45}
h1{font-size:1.45em;margin:.2em 0}h2{font-size:1.1em;margin:1.6em 0 .4em}h3{font-size:1em;margin:1em 0 .3em}
a{color:#0a58ca;text-decoration:none}a:hover{text-decoration:underline}
nav{font-size:.9em;margin-bottom:.6em}
table{border-collapse:collapse;font-size:.88em;margin:.4em 0}
th,td{padding:4px 7px;border-bottom:1px solid #e1e4e8;text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:#eef1f4;border-bottom:2px solid #c4c9cf;vertical-align:bottom;
 white-space:nowrap;z-index:1}
#leaderboard thead th{white-space:normal}
tbody tr:nth-child(even){background:#f7f8fa}
tbody tr:hover{background:#eaf2fd}
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}td.num{white-space:nowrap}
td.name,td.nowrap{white-space:nowrap}
table.sortable thead th{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
.ci,.muted{color:#6a737d}.ci{font-size:.85em}
tr.unranked td{color:#6a737d}
table:not([data-sorted]) tr.group-start td{border-top:2px solid #9aa3ad}
.warn{color:#b35900;font-weight:600}
.legend{font-size:.86em;color:#3d444d;max-width:70em}
.legend dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1.2em}
.legend dt{font-weight:600}.legend dd{margin:0}
table.kv th{background:none;border-bottom:1px solid #e1e4e8;font-weight:600;white-space:nowrap;position:static}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em;background:#f0f2f4;
 padding:0 .25em;border-radius:3px}
svg text{font-family:inherit;font-size:11px;fill:#1f2328}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e1e4e8}
.chart{display:flex;gap:2em;align-items:flex-start;flex-wrap:wrap}
"""

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
    figures = report_figures or {}
    unknown = sorted(set(figures) - {f.name for f in folders})
    if unknown:
        raise RobustdeqError(f"figures given for protocols without entries under {root}: {', '.join(unknown)}")
    written = [out / "sort.js"]
    atomic_write_text(out / "sort.js", SORT_JS)
    summaries = []
    for folder in folders:
        entries = read_entries(folder)
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
        atomic_write_text(table_path, protocol_page(ranked, folder.name, [p.name for p in copied]))
        written.append(table_path)
        summaries.append((folder.name, ranked))
    atomic_write_text(out / "index.html", index_page(summaries))
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


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def text(value: str) -> str:
    """Escaped prose with Markdown code spans (`x`) as <code>; bare URLs become links."""
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(value))
    return re.sub(r"(https?://[^\s<>&\"']+[^\s<>&\"'.,;:)])", r'<a href="\1">\1</a>', out)


def count(accuracy: float, n: int) -> int:
    return round(accuracy * n)


def with_interval(accuracy: float, n: int) -> str:
    return f'{pct(accuracy)} <span class="ci">{interval(accuracy, n)}</span>'


def settings(values: Any) -> str:
    """``key=value`` pairs (nested values as compact JSON), escaped."""
    if not isinstance(values, dict):
        return esc(values)
    if not values:
        return MISSING
    return ", ".join(f"{esc(k)}={esc(v if isinstance(v, str) else json.dumps(v))}" for k, v in values.items())


def link(url: str, label: str | None = None) -> str:
    if not url:
        return MISSING
    return f'<a href="{esc(url)}">{esc(label or url)}</a>'


def cell(content: str, css: str = "", sort: Any = None) -> str:
    attributes = (f' class="{css}"' if css else "") + ("" if sort is None else f' data-sort="{esc(sort)}"')
    return f"<td{attributes}>{content}</td>"


def key_values(rows: list[tuple[str, str]]) -> str:
    """A two-column table of already formatted values."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def simple_table(headers: list[tuple[str, str]], rows: list[list[str]]) -> str:
    """``headers``: (label, css class); ``rows``: formatted cells (``<td>`` elements)."""
    head = "".join(
        f'<th class="{css}">{esc(label)}</th>' if css else f"<th>{esc(label)}</th>" for label, css in headers
    )
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str, script: str | None = None) -> str:
    tail = f'<script src="{esc(script)}"></script>\n' if script else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n{tail}</body></html>\n"
    )


def threat_model(entry: dict[str, Any]) -> str:
    tm = entry["threat_model"]
    return f"{tm['norm']} eps = {tm['eps']:g}"


# ---------------------------------------------------------------- index page


def index_page(summaries: list[tuple[str, list[Ranked]]]) -> str:
    rows = []
    for protocol, ranked in summaries:
        first = ranked[0].entry
        best = first if ranked[0].group is not None else None
        rows.append(
            [
                cell(f'<a href="{quote(protocol)}/index.html">{esc(protocol)}</a>', "name"),
                cell(esc(threat_model(first)), "nowrap"),
                cell(esc(first["dataset"])),
                cell(str(first["n_examples"]), "num"),
                cell(f'{first["protocol_version"]} <span class="ci">{esc(first["protocol_hash"][:8])}</span>', "num"),
                cell(str(len(ranked)), "num"),
                cell(
                    MISSING
                    if best is None
                    else f'{pct(best["robust_accuracy"])} <span class="ci">{esc(best["defense"])}</span>',
                    "num",
                ),
            ]
        )
    headers = [
        ("protocol", ""),
        ("threat model", ""),
        ("data set", ""),
        ("examples", "num"),
        ("version", "num"),
        ("entries", "num"),
        ("top robust %", "num"),
    ]
    body = (
        "<h1>robustdeq leaderboards</h1>"
        "<p>Adversarial robustness of deep equilibrium and weight-tied models: one table per protocol. "
        "Robust accuracy is the per-example worst case over every attack run.</p>"
        + simple_table(headers, rows)
        + '<p class="legend">version: the protocol\'s declared version and the start of its content hash; '
        "top robust %: the robust accuracy of the first-ranked entry (entries flagged as overestimates or not "
        "comparable are not ranked).</p>"
    )
    return page("robustdeq leaderboards", body)


# ---------------------------------------------------------------- protocol page

COLUMNS = [
    ("rank", "num", "num", "rank group: entries not significantly worse than the group's best share it"),
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


def table_row(r: Ranked, previous: Ranked | None) -> str:
    """One row; ``previous`` is the row above it in table order (a group starts where the group changes)."""
    e = r.entry
    n = e["n_examples"]
    worst = strongest(e)
    flags = ", ".join(f"{f} ({kind(f, e['flags'])})" for f in e["flags"]) or "no flags"
    status_html = " ".join(
        f'<span class="warn">{esc(m)}</span>' if m.startswith("⚠") else esc(m) for m, _ in markers(e)
    )
    cells = [
        cell(esc(r.rank), "num", r.position if r.group is not None else ""),
        cell(f'<a href="{quote(e["defense"])}.html" title="{esc(e["defense_name"])}">{esc(e["defense"])}</a>', "name"),
        cell(esc(e["model_family"]), "nowrap"),
        cell(esc(recipe(e)), "nowrap"),
        cell(with_interval(e["clean_accuracy"], n), "num", e["clean_accuracy"]),
        cell(with_interval(e["robust_accuracy"], n), "num", e["robust_accuracy"]),
        cell(pct(autoattack(e)), "num"),
        cell(MISSING if worst is None else f'{esc(worst[0])} <span class="ci">{pct(worst[1])}</span>', "nowrap"),
        cell(f"{e['n_parameters']:,}", "num", e["n_parameters"]),
        cell(MISSING if e["forward_cost"] is None else f"{e['forward_cost']:.1f}", "num"),
        f'<td class="nowrap" title="{esc(flags)}">{status_html}</td>',
    ]
    classes = ([] if r.group is not None else ["unranked"]) + (
        ["group-start"] if previous is not None and previous.group != r.group else []
    )
    css = f' class="{" ".join(classes)}"' if classes else ""
    return f"<tr{css}>{''.join(cells)}</tr>"


def legend(ranked: list[Ranked]) -> str:
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
            "(e.g. 2-8); a thicker line separates the groups.",
        )
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
    items += [(DEVIATES, DEVIATES_MEANING), (GPU, GPU_MEANING)]
    body = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    return (
        f'<div class="legend"><h2>Legend</h2><dl>{body}</dl><p>Click a column header to sort by it, again to '
        "reverse. Hover over a status for the flags.</p></div>"
    )


def protocol_page(ranked: list[Ranked], protocol: str, figures: list[str]) -> str:
    first = ranked[0].entry
    head = "".join(
        f'<th class="{css}" data-type="{kind_}" title="{esc(tip)}">{esc(label)}</th>'
        if css
        else f'<th data-type="{kind_}" title="{esc(tip)}">{esc(label)}</th>'
        for label, css, kind_, tip in COLUMNS
    )
    rows = "\n".join(table_row(r, ranked[i - 1] if i else None) for i, r in enumerate(ranked))
    shown = "".join(f'<figure><img src="{quote(name)}" alt="{esc(name)}"></figure>' for name in figures)
    body = (
        '<nav><a href="../index.html">all protocols</a></nav>'
        f"<h1>{esc(protocol)} <span class='muted'>(protocol version {first['protocol_version']})</span></h1>"
        f"<p>Data set <b>{esc(first['dataset'])}</b>, threat model <b>{esc(threat_model(first))}</b>, "
        f"{first['n_examples']} test examples, protocol version {first['protocol_version']} "
        f"(hash <code>{esc(first['protocol_hash'][:12])}</code>), {len(ranked)} entries.</p>"
        f'<table class="sortable" id="leaderboard"><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>'
        + legend(ranked)
        + (f"<h2>Figures</h2>{shown}" if shown else "")
    )
    return page(f"{protocol} leaderboard", body, script="../sort.js")


# ---------------------------------------------------------------- entry page


def line_chart(
    points: list[tuple[float, float]], x_label: str, y_label: str, marker: float | None = None, marker_label: str = ""
) -> str:
    """An inline SVG line chart of ``points`` (x, y in percent, 0-100) with labelled axes; ``marker``
    draws a dotted vertical line at that x."""
    width, height, left, right, top, bottom = 440, 250, 56, 16, 12, 46
    span_x = nice_max(max([x for x, _ in points] + ([marker] if marker is not None else [])))
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + plot_w * x / span_x

    def sy(y: float) -> float:
        return top + plot_h * (1 - y / 100)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{esc(y_label)} against {esc(x_label)}">'
    ]
    for level in (0, 25, 50, 75, 100):
        y = sy(level)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e1e4e8"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{level}</text>')
    for x in ticks(span_x):
        parts.append(
            f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#555"/>'
        )
        parts.append(f'<text x="{sx(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{x:g}</text>')
    parts.append(
        f'<path d="M{left} {top}V{top + plot_h}H{width - right}" fill="none" stroke="#555"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{esc(x_label)}</text>'
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">{esc(y_label)}</text>'
    )
    if marker is not None:
        parts.append(
            f'<line x1="{sx(marker):.1f}" x2="{sx(marker):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#888" '
            f'stroke-dasharray="3 3"><title>{esc(marker_label)}</title></line>'
        )
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    parts.append(f'<polyline points="{path}" fill="none" stroke="#0a58ca" stroke-width="2"/>')
    for x, y in points:
        parts.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="#0a58ca"><title>{x:g}: {y:.1f}%</title></circle>'
        )
    parts.append("</svg>")
    return "".join(parts)


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value`` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value * (1 - 1e-9))


def ticks(span: float) -> list[float]:
    """Ticks from 0 to ``span`` (a :func:`nice_max` value) at 1, 2 or 5 times a power of ten: at most 7."""
    power = 10 ** math.floor(math.log10(span))
    step = next(m * power / 10 for m in (1, 2, 5, 10) if span / (m * power / 10) <= 6 + 1e-9)
    return [round(i * step, 10) for i in range(int(span / step + 1e-9) + 1)]


def attack_section(e: dict[str, Any]) -> str:
    n = e["n_examples"]
    broke = first_broken(e)
    seconds = e["provenance"].get("attack_seconds")
    attack_settings = e["provenance"]["attack_settings"]
    worst = strongest(e)
    rows = []
    for name, acc in e["attacks"].items():
        label = esc(name) + (" <b>(strongest)</b>" if worst is not None and worst[0] == name else "")
        run_settings = {k: v for k, v in attack_settings.get(name, {}).items() if k != "name"}
        rows.append(
            [
                cell(label, "nowrap"),
                cell(pct(acc), "num"),
                cell(f'<span class="ci">{interval(acc, n)}</span>', "num"),
                cell(MISSING if broke is None else str(broke[name]), "num"),
                cell(MISSING if seconds is None or name not in seconds else f"{seconds[name]:.1f}", "num"),
                cell(settings(run_settings) if name in attack_settings else MISSING),
            ]
        )
    headers = [
        ("attack run", ""),
        ("accuracy %", "num"),
        ("95% interval", "num"),
        ("broke first", "num"),
        ("seconds", "num"),
        ("settings", ""),
    ]
    note = (
        "Each run's own accuracy: correct on the clean input and still correct after that attack alone. "
        "Broke first: examples this run was the first to break, in the order the runs ran"
        + ("." if broke is not None else "; not recorded in schema version 1 entries.")
    )
    return f"<h2>Attack runs</h2><p class='legend'>{esc(note)}</p>" + simple_table(headers, rows)


def checks_section(e: dict[str, Any]) -> str:
    if not e["checks"]:
        return "<h2>Checks</h2><p class='muted'>none</p>"
    rows = [[cell(esc(name), "nowrap"), cell(pct(acc), "num")] for name, acc in e["checks"].items()]
    return (
        "<h2>Checks</h2><p class='legend'>Accuracies of the protocol's re-runs with twice the attack steps or twice "
        "the solver iterations (checks only, not in the worst case).</p>"
        + simple_table([("check", ""), ("accuracy %", "num")], rows)
    )


def sweep_section(e: dict[str, Any]) -> str:
    sweep = e["eps_sweep"]
    if sweep is None or not sweep["points"]:
        return "<h2>Eps sweep</h2><p class='muted'>none (the protocol has no sweep)</p>"
    points = sorted((p["eps"], 100 * p["robust_accuracy"]) for p in sweep["points"])
    eps = e["threat_model"]["eps"]
    chart = line_chart(
        points,
        f"eps ({e['threat_model']['norm']}); dotted: the protocol's eps",
        f"robust accuracy under {', '.join(sweep['attacks'])} (%)",
        marker=eps,
        marker_label=f"the protocol's eps = {eps:g}",
    )
    rows = [[cell(f"{x:g}", "num"), cell(f"{y:.1f}", "num")] for x, y in points]
    return (
        "<h2>Eps sweep</h2><div class='chart'>"
        + chart
        + simple_table([("eps", "num"), ("robust accuracy %", "num")], rows)
        + "</div>"
    )


def flags_section(e: dict[str, Any]) -> str:
    if not e["flags"]:
        return "<h2>Flags</h2><p>none</p>"
    rows = []
    for name in e["flags"]:
        flag = FLAGS.get(name)
        meaning = flag.meaning if flag is not None else "unknown flag (counts as an overestimate)"
        rows.append(
            [
                cell(f"<code>{esc(name)}</code>", "nowrap"),
                cell(esc(kind(name, e["flags"])), "nowrap"),
                cell(text(meaning)),
            ]
        )
    return "<h2>Flags</h2>" + simple_table([("flag", ""), ("class", ""), ("meaning", "")], rows)


def solver_section(e: dict[str, Any]) -> str:
    solver = e["solver"]
    if solver is None:
        return ""

    def trace(values: list[float]) -> str:
        if not values:
            return MISSING
        return f"{values[0]:.2e} after step 1, {values[-1]:.2e} after step {len(values)}"

    rows = [
        ("settings", settings(solver["settings"])),
        ("attack gradient modes", esc(", ".join(solver["attack_grad_modes"]))),
        ("not converged, clean", f"{100 * solver['nonconverged_clean']:.2f} % of forward solves"),
        ("not converged, adversarial", f"{100 * solver['nonconverged_adversarial']:.2f} % of forward solves"),
        ("mean solver steps, clean", f"{solver['mean_steps_clean']:.1f}"),
        ("mean solver steps, adversarial", f"{solver['mean_steps_adversarial']:.1f}"),
        ("spectral radius of J_f(z*)", f"{solver['spectral_radius']:.3f}"),
        ("mean relative residual, clean", trace(solver["residual_trace_clean"])),
        ("mean relative residual, adversarial", trace(solver["residual_trace_adversarial"])),
    ]
    return "<h2>Solver</h2>" + key_values(rows)


def fidelity_section(e: dict[str, Any]) -> str:
    if "fidelity" not in e:
        return f"<h2>Fidelity to the paper</h2><p class='muted'>{esc(NOT_RECORDED)}</p>"
    fidelity = e["fidelity"]
    if fidelity is None:
        return "<h2>Fidelity to the paper</h2><p class='muted'>no fidelity record (not a reference defense)</p>"
    rows = [
        ("title", text(fidelity["title"])),
        (
            "arXiv",
            link(f"https://arxiv.org/abs/{fidelity['arxiv']}", fidelity["arxiv"]) if fidelity["arxiv"] else MISSING,
        ),
        ("venue", text(fidelity["venue"])),
        ("code", text(fidelity["code"])),
    ]
    rows += [(key, text(fidelity[key])) for key in ("data", "architecture", "training", "evaluation", "reported")]
    deviation_rows = [
        [cell(text(d["what"])), cell(esc(d["kind"]), "nowrap"), cell(text(d["why"]))] for d in fidelity["deviations"]
    ]
    return (
        "<h2>Fidelity to the paper</h2>"
        + key_values(rows)
        + (
            f"<h3>Deviations ({len(deviation_rows)})</h3>"
            + simple_table([("what", ""), ("kind", ""), ("why", "")], deviation_rows)
            if deviation_rows
            else "<p>No deviations from the paper.</p>"
        )
    )


def paper_evaluation_section(e: dict[str, Any]) -> str:
    if "paper_evaluation" not in e:
        return f"<h2>The paper's own evaluation</h2><p class='muted'>{esc(NOT_RECORDED)}</p>"
    runs = e["paper_evaluation"]
    if not runs:
        return "<h2>The paper's own evaluation</h2><p class='muted'>none</p>"
    rows = [
        [
            cell(esc(r["label"]), "nowrap"),
            cell(text(r["description"])),
            cell(pct(r["accuracy"]), "num"),
            cell(settings(r["settings"])),
        ]
        for r in runs
    ]
    return (
        "<h2>The paper's own evaluation</h2><p class='legend'>Run beside the protocol, outside the worst case.</p>"
        + simple_table([("run", ""), ("description", ""), ("accuracy %", "num"), ("settings", "")], rows)
    )


def provenance_section(e: dict[str, Any]) -> str:
    prov = e["provenance"]
    commit = prov["git_commit"]
    device = prov.get("device")
    training = prov["training"]
    rows = [
        (
            "versions",
            esc(
                f"robustdeq {prov['robustdeq_version']}, torch {prov['torch_version']}, Python {prov['python_version']}"
            ),
        ),
        ("git commit", MISSING if commit is None else f"<code>{esc(commit)}</code>"),
        ("command", f"<code>{esc(prov['command'])}</code>" if "command" in prov else esc(NOT_RECORDED)),
        ("hardware", esc(prov["hardware"])),
        ("device", settings(device) if device is not None else esc(NOT_RECORDED)),
        ("seed", str(prov["seed"])),
        ("model settings", settings(e["model_settings"])),
    ]
    if training is None:
        rows.append(("training", "none: a model robustdeq did not train"))
    else:
        record = {k: v for k, v in training.items() if k != "recipe_settings"}
        rows.append(("training", settings(record)))
        rows.append(("recipe settings", settings(training["recipe_settings"])))
    if "checkpoint" not in prov:
        rows.append(("checkpoint", esc(NOT_RECORDED)))
    else:
        rows.append(("checkpoint", "none" if prov["checkpoint"] is None else settings(prov["checkpoint"])))
    rows.append(("reduced budget", "yes" if prov["reduced_budget"] else "no"))
    if prov.get("nonstandard"):
        rows.append(("non-standard options", settings(prov["nonstandard"])))
    rows.append(("seconds", f"training {prov['train_seconds']:.1f}, evaluation {prov['eval_seconds']:.1f}"))
    return "<h2>Provenance</h2>" + key_values(rows)


def federated_section(e: dict[str, Any]) -> str:
    federated = e.get("federated")
    if not federated:
        return ""
    rows = [
        ("fusion", esc(federated["fusion"])),
        ("clients", str(federated["clients"])),
        ("training examples per client", esc(", ".join(map(str, federated["client_examples"])))),
        ("communication rounds", str(len(federated["rounds"]))),
        ("monitor", text(federated["monitor"])),
    ]
    return "<h2>Federated training</h2>" + key_values(rows)


def entry_page(r: Ranked, protocol: str) -> str:
    e = r.entry
    n = e["n_examples"]
    kept = "" if r.group is not None else " (not ranked: see the flags)"
    marks = "<br>".join(f"{esc(m)}: {esc(meaning)}" for m, meaning in markers(e))
    indices = NOT_RECORDED
    if "per_example" in e:
        decoded = decode_indices(e["per_example"]["indices"])
        indices = f"{e['per_example']['indices']} ({len(decoded)} examples)"

    def accuracy(value: float) -> str:
        low, high = wilson(count(value, n), n)
        return (
            f'{pct(value)} % <span class="ci">[{100 * low:.1f}, {100 * high:.1f}] (95% Wilson interval), '
            f"{count(value, n)} / {n}</span>"
        )

    summary = [
        ("rank", esc(r.rank) + esc(kept)),
        ("clean accuracy", accuracy(e["clean_accuracy"])),
        ("robust accuracy", accuracy(e["robust_accuracy"]) + " (the per-example worst case over every attack run)"),
        ("status", marks),
        ("model family", esc(e["model_family"])),
        ("recipe", esc(recipe(e))),
        ("parameters", f"{e['n_parameters']:,}"),
        ("forward cost", MISSING if e["forward_cost"] is None else f"{e['forward_cost']:.1f} block evaluations"),
        ("paper", link(e["paper"])),
        ("evaluated examples", esc(indices)),
    ]
    body = (
        f'<nav><a href="index.html">&larr; {esc(protocol)} leaderboard</a> &middot; '
        '<a href="../index.html">all protocols</a></nav>'
        f"<h1>{esc(e['defense_name'])}</h1>"
        f"<p class='muted'><code>{esc(e['defense'])}</code> under {esc(protocol)}: {esc(e['dataset'])}, "
        f"{esc(threat_model(e))}, {n} test examples, protocol version {e['protocol_version']}, "
        f"schema version {e['schema_version']}</p>"
        + key_values(summary)
        + attack_section(e)
        + checks_section(e)
        + sweep_section(e)
        + flags_section(e)
        + solver_section(e)
        + federated_section(e)
        + fidelity_section(e)
        + paper_evaluation_section(e)
        + provenance_section(e)
        + f'<p><a href="index.html">&larr; back to the {esc(protocol)} leaderboard</a></p>'
    )
    return page(f"{e['defense']} - {protocol}", body)
