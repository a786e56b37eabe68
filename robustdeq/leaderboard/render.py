"""Render one protocol's entries: a compact ranked Markdown table with per-defense details, and a CSV.

``leaderboard.md`` holds the headline table (:func:`headline`: at most 12 columns, the ones a
reader ranks by, with rank groups, the letters of all pairwise comparisons and 95% intervals), its
legend, the entries set apart (another
protocol version or number of examples than the majority), and a details section per defense
with every attack run, the checks, the eps sweep and the solver. Where the folder's ``seeds.json``
has a defense's training-seed spread, its robust accuracy shows the spread beside the interval.
``leaderboard.csv`` keeps every number (:func:`table`); ``leaderboard.html`` is the headline table as
one page (``robustdeq site`` builds the browsable site). Numbers published elsewhere under the same
threat model (the folder's ``published.toml``, :mod:`robustdeq.records.published`) get a table of their
own below the ranked one, never ranked with the entries; a folder with that file and no entries yet
gets a ``leaderboard.md`` that says so, with the published table (:func:`render_published`).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined

from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard.headline import (
    BEST_KNOWN,
    BEST_KNOWN_MEANING,
    DEVIATES,
    GPU,
    GPU_MEANING,
    MISSING,
    SEEDS,
    SEEDS_MEANING,
    STATUS_MARKERS,
    STATUS_MEANINGS,
    autoattack,
    comparable,
    computed_on_gpu,
    deviations,
    first_broken,
    interval,
    markers,
    pct,
    recipe,
    seed_list,
    seed_measured_apart,
    seed_spread,
    strongest,
    with_seeds,
)
from robustdeq.leaderboard.ranking import ALPHA, Ranked, order_key, rank_groups
from robustdeq.leaderboard.stats import wilson
from robustdeq.records.entry import best_known, split_checks
from robustdeq.records.flags import FLAGS, kind
from robustdeq.records.protocol import ProtocolSpec, find_protocol
from robustdeq.records.published import PUBLISHED, PublishedFile, read_published
from robustdeq.records.store import atomic_write_text, read_seeds

UNRELIABLE = "potentially unreliable"
PUBLISHED_TITLE = "Reported elsewhere (published numbers, not ranked with the entries)"
NO_ENTRIES_YET = "No entries yet"
PUBLISHED_LEGEND = (
    "**robust %**: under the attack named, as the source lists it; **paper's own robust %**: what the paper itself "
    "reported, as the source lists it (another attack, possibly another subset of the test set or another model "
    "trained with the same defense)."
)
MAX_COLUMNS = 12

CODE_SPAN = re.compile(r"`([^`]+)`")
BARE_URL = re.compile(r"(https?://[^\s<>&\"']+[^\s<>&\"'.,;:)])")


def template_environment(*packages: str) -> Environment:
    """The Jinja2 templates in the ``templates`` folder of each of ``packages`` (the first holding a name
    wins), autoescaped: every value a template prints is HTML-escaped unless a template made it."""
    env = Environment(
        loader=ChoiceLoader([PackageLoader(package, "templates") for package in packages]),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(MISSING=MISSING, segments=segments)
    return env


@functools.cache
def templates() -> Environment:
    """The leaderboard's templates (``robustdeq/leaderboard/templates``): the site and ``leaderboard.html``."""
    return template_environment("robustdeq.leaderboard")


def segments(value: str) -> list[tuple[bool, list[tuple[bool, str]]]]:
    """Prose cut into its Markdown code spans (`x`) and the rest, each cut into bare URLs and the rest:
    ``[(is code, [(is URL, text), ...]), ...]``, for the ``prose`` macro to lay out (escaped)."""
    out = []
    for i, part in enumerate(CODE_SPAN.split(value)):
        pieces = [(j % 2 == 1, piece) for j, piece in enumerate(BARE_URL.split(part)) if piece]
        if pieces:
            out.append((i % 2 == 1, pieces))
    return out


def dataframe_cells(frame: pd.DataFrame, na_rep: str = "NaN") -> tuple[list[str], list[list[str]]]:
    """(column names, rows of cells) of a frame of strings, for the ``dataframe`` macro (the layout of
    pandas' ``to_html(index=False, border=0)``); missing values show as ``na_rep``."""
    rows = [[na_rep if pd.isna(v) else str(v) for v in row] for row in frame.itertuples(index=False)]
    return [str(c) for c in frame.columns], rows


def ranked(entries: list[dict[str, Any]]) -> tuple[list[Ranked], list[dict[str, Any]]]:
    """(the rank groups of the majority's protocol version and n, the entries set apart, in table order)."""
    if not entries:
        raise RobustdeqError("no leaderboard entries to render")
    main, apart = comparable(entries)
    return rank_groups(main), sorted(apart, key=order_key)


def table(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Every number of every entry, one row each (the CSV); accuracies in percent.

    Rows follow the headline's order; ``rank`` is the rank group (``-``: not ranked, ``apart``:
    another protocol version or number of examples than the majority, never ranked with it);
    ``letters`` the compact letter display (entries sharing a letter are not significantly different).
    """
    groups, apart = ranked(entries)
    rows = [(r.entry, r.rank, r.letters) for r in groups] + [(e, "apart", MISSING) for e in apart]
    attack_names: list[str] = []
    for e, _, _ in rows:
        attack_names.extend(name for name in e["attacks"] if name not in attack_names)
    seeded = any("seed_spread" in e for e, _, _ in rows)
    out = []
    for e, rank, letters in rows:
        solver = e["solver"]
        flags = e["flags"]
        n = e["n_examples"]
        clean_low, clean_high = wilson(round(e["clean_accuracy"] * n), n)
        robust_low, robust_high = wilson(round(e["robust_accuracy"] * n), n)
        row: dict[str, Any] = {
            "rank": rank,
            "letters": letters,
            "defense": e["defense"],
            "model": e["model_family"],
            "recipe": recipe(e),
            "clean %": round(100 * e["clean_accuracy"], 2),
            "clean low %": round(100 * clean_low, 2),
            "clean high %": round(100 * clean_high, 2),
            "robust %": round(100 * e["robust_accuracy"], 2),
            "robust low %": round(100 * robust_low, 2),
            "robust high %": round(100 * robust_high, 2),
            "protocol robust %": round(100 * e.get("protocol_robust_accuracy", e["robust_accuracy"]), 2),
        }
        for name in attack_names:
            acc = e["attacks"].get(name)
            row[f"{name} %"] = None if acc is None else round(100 * acc, 2)
        if seeded:
            row.update(seed_columns(e))
        row["params"] = e["n_parameters"]
        row["block evals"] = None if e["forward_cost"] is None else round(e["forward_cost"], 1)
        row["not converged %"] = (
            None
            if solver is None
            else round(100 * max(solver["nonconverged_clean"], solver["nonconverged_adversarial"]), 2)
        )
        row["status"] = (f"{UNRELIABLE}: {', '.join(flags)}" if flags else "ok") + computed_on(e)
        row["deviates from paper"] = bool(deviations(e))
        row["protocol version"] = e["protocol_version"]
        row["protocol hash"] = e["protocol_hash"][:12]
        row["n examples"] = n
        row["paper"] = e["paper"]
        out.append(row)
    return pd.DataFrame(out)


def seed_columns(e: dict[str, Any]) -> dict[str, Any]:
    """The CSV's training-seed columns: the seeds, the robust accuracy's spread across them (%) and the
    protocol version it was measured under (empty without a seed spread)."""
    spread = e.get("seed_spread")
    if spread is None:
        return dict.fromkeys(
            ("seeds", "seeds robust min %", "seeds robust max %", "seeds robust sd %", "seeds protocol version")
        )
    robust = spread["robust_accuracy"]
    return {
        "seeds": " ".join(map(str, spread["seeds"])),
        "seeds robust min %": round(100 * robust["min"], 2),
        "seeds robust max %": round(100 * robust["max"], 2),
        "seeds robust sd %": round(100 * robust["std"], 2),
        "seeds protocol version": spread["protocol_version"],
    }


def computed_on(entry: dict[str, Any]) -> str:
    """`` (GPU: <name>)`` for an entry computed on a GPU (CUDA numbers differ from CPU ones in the
    last bits and in PGD's random starts), else nothing."""
    return f" (GPU: {entry['provenance']['device']['name']})" if computed_on_gpu(entry) else ""


def headline_row(e: dict[str, Any], rank: str, letters: str = MISSING, links: bool = True) -> dict[str, str]:
    """One headline row; ``links``: the defense links to its details section (``#<defense>``)."""
    n = e["n_examples"]
    worst = strongest(e)
    seeds = seed_spread(e)
    name = (f"[{e['defense']}](#{e['defense']})" if links else e["defense"]) + (f" {DEVIATES}" if deviations(e) else "")
    return {
        "rank": rank,
        "letters": letters,
        "defense": name,
        "model": e["model_family"],
        "recipe": recipe(e),
        "clean % [95% CI]": f"{pct(e['clean_accuracy'])} {interval(e['clean_accuracy'], n)}",
        "robust % [95% CI]": f"{pct(e['robust_accuracy'])} {interval(e['robust_accuracy'], n)}"
        + (f" {BEST_KNOWN}" if e.get("best_known") else "")
        + ("" if seeds is None else f"; {seeds}"),
        "AutoAttack %": pct(autoattack(e)),
        "strongest attack": MISSING if worst is None else f"{worst[0]} ({pct(worst[1])})",
        "params": f"{e['n_parameters']:,}",
        "block evals": MISSING if e["forward_cost"] is None else f"{e['forward_cost']:.1f}",
        "status": " ".join(m for m, _ in markers(e) if m != DEVIATES),
    }


def headline(entries: list[dict[str, Any]], links: bool = True) -> pd.DataFrame:
    """The compact table of the entries that share the majority's protocol version and n, in rank order."""
    groups, _ = ranked(entries)
    return pd.DataFrame([headline_row(r.entry, r.rank, r.letters, links) for r in groups])


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table; missing values (not applicable, e.g. solver columns of a CNN) show as '-'.

    Cells are printed as given (tabulate would print "53.0" as "53"); columns of numbers (every cell
    starts with a digit and has no words) are right-aligned, so that a cell with words after its number
    (a training-seed spread) keeps the column's numbers in line, on the left.
    """
    cells = frame.astype(object).where(frame.notna(), MISSING)
    align = ["right" if all(numeric(str(v)) for v in cells[c]) else "left" for c in cells.columns]
    return str(cells.to_markdown(index=False, disable_numparse=True, colalign=align))


def numeric(cell: str) -> bool:
    """A cell of numbers: it starts with a digit and has no letters (``46.0 [36.6, 55.7]``, ``1-4``), or is missing."""
    return cell == MISSING or (cell[:1].isdigit() and not re.search(r"[a-zA-Z]", cell))


def legend(groups: list[Ranked]) -> str:
    n = groups[0].entry["n_examples"] if groups else 0
    unpaired = [r.entry["defense"] for r in groups if r.group is not None and "per_example" not in r.entry]
    lines = [
        "**rank**: a rank group is the entries not significantly worse than the group's best (exact McNemar test "
        f"on the paired per-example robust outcomes, Holm-corrected, alpha {ALPHA}; `docs/statistics.md`); "
        "`2-8` is the group holding positions 2 to 8. A group is cut where its *best* entry is significantly "
        "better, so neighbours in different groups can be indistinguishable: the letters say which. "
        "`-`: not ranked (a flag of class overestimate or not-comparable).",
        "**letters**: every pair compared (each entry against every entry below it, the same test, Holm-corrected "
        "over that entry's comparisons): entries that share a letter are not significantly different, entries that "
        "share none are (a compact letter display).",
        f"**clean %, robust %**: percent of the {n} test examples correct on the clean input / on the clean input "
        "and after every attack run (the per-example worst case), with the 95% Wilson score interval. Each row is "
        "one training run from one seed: the interval covers the choice of test examples only, and retraining with "
        "another seed moves the numbers too (`benchmarks/seed_variance.py` measures by how much; its last results "
        "are in `benchmarks/results/seed_variance.md`).",
        "**AutoAttack %**: AutoAttack's own accuracy; **strongest attack**: the attack run with the lowest accuracy "
        "on its own; **block evals**: block (cell) evaluations per example in a clean forward.",
        "**status**: "
        + "; ".join(
            f"`{STATUS_MARKERS[k]}` {STATUS_MEANINGS[k]}" for k in ("overestimate", "not-comparable", "informational")
        )
        + f"; `ok` no flags; `{GPU}` {GPU_MEANING}.",
        f"**{DEVIATES}** after a defense: it departs from its paper; its details below list the deviations.",
    ]
    if any(r.entry.get("best_known") for r in groups):
        lines.append(f"**{BEST_KNOWN}** after a robust accuracy: {BEST_KNOWN_MEANING}.")
    if any("seed_spread" in r.entry for r in groups):
        lines.append(f"**{SEEDS}** after a robust accuracy: {SEEDS_MEANING}.")
    if unpaired and len(groups) > 1:
        which = ", ".join(unpaired) if len(unpaired) <= 5 else f"{len(unpaired)} of the entries"
        lines.append(
            f"**unpaired**: entries without per-example outcomes (schema version 1: {which}) are compared with the "
            "unpaired two-proportion test, conservative when the examples are shared."
        )
    return "\n".join(f"- {line}" for line in lines)


def apart_section(apart: list[dict[str, Any]], majority: dict[str, Any]) -> str:
    """The entries of another protocol version or number of examples, in a table of their own."""
    if not apart:
        return ""
    rows = [
        headline_row(e, MISSING) | {"version": str(e["protocol_version"]), "n": str(e["n_examples"])} for e in apart
    ]
    for row in rows:
        del row["letters"], row["params"], row["block evals"]
    return (
        "\n## Not ranked with the table above\n\n"
        f"These entries were evaluated under another protocol version or on another number of examples than the "
        f"table above (version {majority['protocol_version']}, hash `{majority['protocol_hash'][:12]}`, "
        f"{majority['n_examples']} examples), so their numbers are not comparable with it: re-run them.\n\n"
        + markdown(pd.DataFrame(rows))
        + "\n"
    )


def details(e: dict[str, Any]) -> str:
    """Every number of one entry in Markdown: attack runs, checks, eps sweep, flags, solver, deviations."""
    n = e["n_examples"]
    broke = first_broken(e)
    worst = strongest(e)
    seconds = e["provenance"].get("attack_seconds") or {}
    lines = [
        f"### {e['defense']}",
        "",
        f"{e['defense_name']} ({e['model_family']}, recipe {recipe(e)}"
        + (f", [paper]({e['paper']})" if e["paper"] else "")
        + f"). Clean {pct(e['clean_accuracy'])} % {interval(e['clean_accuracy'], n)}, robust "
        f"{pct(e['robust_accuracy'])} % {interval(e['robust_accuracy'], n)} on {n} examples"
        + (
            f" (best known {BEST_KNOWN}; the protocol's attacks alone: {pct(e['protocol_robust_accuracy'])} %; "
            + "; ".join(
                f"{c['by']} ({c['when'][:10]}, file {c['file_sha256'][:12]}): {len(c['broken'])} of "
                f"{c['submitted']} verified, new {', '.join(map(str, c['new'])) or 'none'}"
                for c in e.get("challenges") or []
            )
            + ")"
            if e.get("best_known")
            else ""
        )
        + f"; {e['n_parameters']:,} parameters"
        + ("" if e["forward_cost"] is None else f", {e['forward_cost']:.1f} block evaluations per forward")
        + f"; trained in {e['provenance']['train_seconds']:.0f} s.",
        "",
        "| attack run | accuracy % | 95% CI | broke first | seconds |",
        "|:--|--:|--:|--:|--:|",
    ]
    for name, acc in e["attacks"].items():
        label = f"{name} (strongest)" if worst is not None and worst[0] == name else name
        first = MISSING if broke is None else str(broke[name])
        spent = f"{seconds[name]:.1f}" if name in seconds else MISSING
        lines.append(f"| {label} | {pct(acc)} | {interval(acc, n)} | {first} | {spent} |")
    inside, outside = split_checks(e)
    if inside:
        lines += ["", "Checks in the worst case (their breaks count; also in the table above): " + ", ".join(
            f"{name} {pct(acc)} %" for name, acc in inside.items()) + "."]  # fmt: skip
    if outside:
        lines += ["", "Checks outside the worst case (compared only): " + ", ".join(
            f"{name} {pct(acc)} %" for name, acc in outside.items()) + "."]  # fmt: skip
    sweep = e["eps_sweep"]
    if sweep is not None and sweep["points"]:
        points = ", ".join(f"{p['eps']:g}: {pct(p['robust_accuracy'])}" for p in sweep["points"])
        lines += ["", f"Eps sweep ({', '.join(sweep['attacks'])}; eps: robust %): {points}."]
    spread = e.get("seed_spread")
    if spread is not None:
        lines += ["", seed_details(e, spread)]
    solver = e["solver"]
    if solver is not None:
        lines += [
            "",
            f"Solver: {solver['settings']['f_solver']}, tol {solver['settings']['f_tol']:g}, "
            f"mean steps {solver['mean_steps_clean']:.1f} clean / {solver['mean_steps_adversarial']:.1f} adversarial, "
            f"not converged {100 * solver['nonconverged_clean']:.2f} % / "
            f"{100 * solver['nonconverged_adversarial']:.2f} %, spectral radius {solver['spectral_radius']:.3f}.",
        ]
    if e["flags"]:
        described = [
            f"`{f}` ({kind(f, e['flags'])}: {FLAGS[f].meaning if f in FLAGS else 'unknown flag'})" for f in e["flags"]
        ]
        lines += ["", "Flags: " + "; ".join(described) + "."]
    if deviations(e):
        lines += ["", f"{DEVIATES} Deviations from the paper:"]
        lines += [f"- {d['what']} ({d['kind']}): {d['why']}" for d in deviations(e)]
    return "\n".join(lines) + "\n"


def seed_details(e: dict[str, Any], spread: dict[str, Any]) -> str:
    """The details' line on the training seeds: each seed's accuracies, the robust spread against the interval."""
    robust = spread["robust_accuracy"]
    apart = seed_measured_apart(e)
    per_seed = ", ".join(
        f"seed {seed} {pct(a['clean_accuracy'])} / {pct(a['robust_accuracy'])}"
        for seed, a in spread["per_seed"].items()
    )
    return (
        f"Training seeds ({seed_list(spread['seeds'])}, `benchmarks/seed_variance.py`"
        + ("" if apart is None else f"; measured under {apart}, not as this entry")
        + f"), clean / robust %: {per_seed}. Robust {pct(robust['min'])}-{pct(robust['max'])}, mean "
        f"{pct(robust['mean'])}, sd {100 * robust['std']:.1f}; one evaluation's 95% interval is "
        f"± {100 * robust['wilson_half_width']:.1f} at the mean."
    )


def published_intro(published: PublishedFile) -> str:
    """What the published numbers are, and why they are not ranked with the entries."""
    return (
        f"Numbers that papers and public leaderboards report under this threat model, copied as their sources "
        f"list them ({PUBLISHED} in this protocol's leaderboard folder; each row names its source). They come "
        "from other models, training budgets, test sets and attacks than the entries, so they are not comparable "
        "with them and never ranked with them: they show what the threat model allows."
    )


def published_rows(published: PublishedFile) -> list[dict[str, str]]:
    """One row per published number, as text: the model and its paper, clean and robust accuracy in
    percent (two decimals, as the sources list them), the paper's own robust accuracy (``-`` when the
    source lists none), the attack, the setting and where it is listed."""
    return [
        {
            "model": r.model,
            "paper": r.paper,
            "clean": f"{r.clean:.2f}",
            "robust": f"{r.robust:.2f}",
            "reported": MISSING if r.reported is None else f"{r.reported:.2f}",
            "attack": r.attack,
            "setting": r.setting,
            "source": r.source,
            "listed": r.listed,
        }
        for r in published.result
    ]


def published_context(published: PublishedFile | None) -> dict[str, Any] | None:
    """What the protocol page shows of the numbers published elsewhere (None: the folder has none)."""
    if published is None:
        return None
    return {
        "title": PUBLISHED_TITLE,
        "intro": published_intro(published),
        "rows": published_rows(published),
        "legend": PUBLISHED_LEGEND.replace("**", ""),
        "note": published.note,
    }


def published_section(published: PublishedFile, level: int = 2) -> str:
    """The published numbers as a Markdown section of their own (:func:`published_rows`), its heading
    at ``level``."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        f"{'#' * level} {PUBLISHED_TITLE}",
        "",
        published_intro(published),
        "",
        "| model (paper) | clean % | robust % | attack | paper's own robust % | setting | listed in |",
        "|:--|--:|--:|:--|--:|:--|:--|",
    ]
    for r in published_rows(published):
        lines.append(
            f"| [{cell(r['model'])}]({r['paper']}) | {r['clean']} | {r['robust']} | {cell(r['attack'])} | "
            f"{r['reported']} | {cell(r['setting'])} | [{cell(r['listed'])}]({r['source']}) |"
        )
    lines += ["", f"- {PUBLISHED_LEGEND}"]
    if published.note:
        lines += ["", published.note]
    return "\n".join(lines) + "\n"


def known_protocol(protocol: str) -> ProtocolSpec | None:
    """``attacks/<protocol>.toml`` as robustdeq reads it, or None when the folder names no known protocol."""
    try:
        return find_protocol(protocol)
    except RobustdeqError:
        return None


def protocol_line(protocol: str) -> str:
    """The protocol's data set, threat model, examples and version (from ``attacks/<protocol>.toml``), or
    "" when it is not a known protocol."""
    spec = known_protocol(protocol)
    if spec is None:
        return ""
    return (
        f"Data set {spec.dataset}, threat model {spec.threat.norm} eps = {spec.threat.eps:g}, "
        f"{spec.n_examples} test examples, protocol version {spec.version}."
    )


def render_published(folder: Path, published: PublishedFile) -> list[Path]:
    """Write ``leaderboard.md`` for a folder with published numbers and no entries yet: says so, then the
    published numbers. The entries' tables replace it once :func:`render` has entries to render."""
    line = protocol_line(folder.name)
    text = (
        f"# Leaderboard: {folder.name}\n\n"
        + (f"{line}\n\n" if line else "")
        + f"{NO_ENTRIES_YET}: no defense has been evaluated under this protocol. The ranked table appears here "
        "when the first entry lands (`robustdeq leaderboard` renders it from the JSON entries in this folder).\n\n"
        + published_section(published)
    )
    md = folder / "leaderboard.md"
    atomic_write_text(md, text)
    return [md]


def render(entries: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv`` and ``leaderboard.html`` (best-known numbers, marked,
    where outside attacks were recorded: :func:`robustdeq.records.entry.best_known`; the training-seed
    spread beside the robust accuracy where the folder's ``seeds.json`` has one); the folder's
    published numbers, if any, in ``leaderboard.md`` below the ranked table."""
    entries = with_seeds([best_known(e) for e in entries], read_seeds(folder))
    groups, apart = ranked(entries)
    published = read_published(folder)
    first = groups[0].entry
    tm = first["threat_model"]
    title = f"Leaderboard: {first['protocol']} (protocol version {first['protocol_version']})"
    intro = (
        f"Data set `{first['dataset']}`, threat model {tm['norm']} eps = {tm['eps']}, "
        f"{first['n_examples']} test examples, protocol hash `{first['protocol_hash'][:12]}`. "
        "Robust accuracy is the per-example worst case over every attack run. Rendered by `robustdeq leaderboard` "
        "from the JSON entries in this folder; `leaderboard.csv` has every number, `robustdeq site` a page per entry."
    )
    frame = headline(entries)
    shown = [r.entry for r in groups] + apart
    text = (
        f"# {title}\n\n{intro}\n\n{markdown(frame)}\n\n{legend(groups)}\n"
        + apart_section(apart, first)
        + ("" if published is None else "\n" + published_section(published))
        + "\n## Details per defense\n\nEach attack run's own accuracy; broke first: the examples it was the first to "
        "break, in the order the runs ran (not recorded by schema version 1 entries).\n\n"
        + "\n".join(details(e) for e in shown)
    )
    md = folder / "leaderboard.md"
    csv = folder / "leaderboard.csv"
    page = folder / "leaderboard.html"
    atomic_write_text(md, text)
    atomic_write_text(csv, table(entries).to_csv(index=False))
    columns, rows = dataframe_cells(headline(entries, links=False), na_rep=MISSING)
    atomic_write_text(
        page, templates().get_template("leaderboard.html").render(title=title, intro=intro, columns=columns, rows=rows)
    )
    return [md, csv, page]
