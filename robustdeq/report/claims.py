"""The seed papers' claims, tested on the leaderboard entries and benchmark results (never typed by hand).

Each claim (``claims.toml`` beside this module) names two defenses, the protocols whose entries test
it (one data set each: digits, MNIST), a measure, the direction the paper expects and, when the
paper states one, the size it expects. Each protocol gets its own finding: verdicts are per claim
and protocol, at that protocol's n or these repeats (no correction across claims or protocols: each
is its own question, and the p-value is shown). ``docs/statistics.md`` has the same rules with examples.

**Accuracies** (``robust``, ``clean``) are compared example by example: the paired difference
D = first - second with Newcombe's 95% interval [low, high] and the exact McNemar p-value
(:func:`robustdeq.leaderboard.stats.paired_difference`); entries without per-example outcomes
(schema version 1) fall back to the unpaired interval and test. With ``margin`` m (default 0.05):

- ``higher``: supported when low > 0 and p < alpha; contradicted when high < 0 and p < alpha;
  else inconclusive. ``lower`` is the mirror image. With a claimed size ``expected_difference``
  d (> 0 for higher): contradicted when high < d - m (the interval excludes the claimed size, or
  anything within m of it, on the small side); else supported when low > 0 and p < alpha; else
  inconclusive. Lower with d < 0: contradicted when low > d + m, supported when high < 0 and p <
  alpha.
- ``similar``: supported when -m < low and high < m; contradicted when high < -m or low > m.
- ``not-lower`` (at least as good): supported when low > -m; contradicted when high < -m.

**Costs** are the ratio R = first / second with an interval [low, high]: ``forward_cost`` (block
evaluations per forward, from the entries) is one deterministic count each, low = high = R;
``train_seconds`` comes from a benchmark's repeated, interleaved timings (``benchmark``: a JSON
file under ``benchmarks/results``, written by ``benchmarks/jiio_vs_pgd_at.py --repeats``), R the
ratio of the mean seconds per epoch and [low, high] its spread over the repeats (fastest first
over slowest second, slowest first over fastest second). Fewer than :data:`MIN_REPEATS` timings,
a missing file or one of another protocol give ``not measured``: a single timing on a shared
machine says nothing about a ratio. With ``margin`` m (default 0.1):

- with a claimed ratio ``expected_ratio`` r < 1 (``lower``, e.g. 0.33 for "about 3x faster"): the
  claimed size counts down to b = r (1 + m). Supported when low <= b (the spread reaches the
  claimed size, or beyond it) and high < 1 (first is cheaper in every pairing); contradicted when
  low > b (the spread excludes the claimed size: cheaper by less than claimed, or not cheaper);
  else inconclusive at these repeats. r > 1 (``higher``) is the mirror image with b = r / (1 + m):
  supported when high >= b and low > 1, contradicted when high < b.
- without a claimed size, ``lower``: supported when high < 1 - m, contradicted when low > 1 + m,
  else no clear difference; ``higher`` the mirror image; ``similar``: supported when the interval
  lies within [1 - m, 1 + m], contradicted when it lies outside, else inconclusive; ``not-lower``:
  supported when low >= 1 - m, contradicted when high < 1 - m, else inconclusive.

**Circular claims** (``circular``: why) get no verdict: the benchmark makes the two sides equal
(or different) by construction, so the measurement cannot test the paper. The measurement is
still shown, with the reason. A missing entry gives ``not evaluated`` (a protocol without any
entries: "no entries yet"), a circular claim's too; entries of different protocol versions or n give
``not comparable``.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard.headline import version_key
from robustdeq.leaderboard.ranking import ALPHA, pairable
from robustdeq.leaderboard.stats import Difference, paired_difference, unpaired_difference
from robustdeq.records.flags import overestimates
from robustdeq.records.outcomes import unbits
from robustdeq.records.paths import repo_folder

CLAIMS_FILE = Path(__file__).with_name("claims.toml")
BENCHMARK_RESULTS = repo_folder("benchmarks") / "results"
ACCURACIES = {"robust": "robust_accuracy", "clean": "clean_accuracy"}
COSTS = ("forward_cost", "train_seconds")
EXPECTED = ("higher", "lower", "similar", "not-lower")
ACCURACY_MARGIN = 0.05
COST_MARGIN = 0.1
MIN_REPEATS = 3  # timings of each defense a train_seconds verdict needs
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive at this n"
INCONCLUSIVE_REPEATS = "inconclusive at these repeats"
NOT_EVALUATED, NOT_COMPARABLE = "not evaluated", "not comparable"
NOT_MEASURED = "not measured"
CIRCULAR = "no verdict: circular"
NO_DIFFERENCE = "no clear difference"  # a cost ratio within the margin of 1
NO_ENTRIES_YET = "no entries yet"  # the note of a protocol without any entries
REQUIRED = ("id", "paper", "text", "protocols", "first", "second", "measure", "expected")
OPTIONAL = ("margin", "expected_ratio", "expected_difference", "benchmark", "circular")


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    text: str
    protocols: tuple[str, ...]  # each tests the claim on its own entries (a finding per protocol)
    first: str
    second: str
    measure: str
    expected: str
    margin: float
    expected_ratio: float | None = None  # costs: the claimed first / second (0.33: "about 3x cheaper")
    expected_difference: float | None = None  # accuracies: the claimed first - second (a fraction)
    benchmark: str | None = None  # train_seconds: the results file under benchmarks/results
    circular: str | None = None  # why the measurement cannot test the claim (no verdict)


@dataclass(frozen=True)
class Ratio:
    """first / second of a cost: ``estimate`` and its interval [``low``, ``high``] (a timing's spread
    over ``repeats``; low = high for a single deterministic count), and the timings themselves."""

    estimate: float
    low: float
    high: float
    repeats: int = 1
    first_runs: tuple[float, ...] = ()
    second_runs: tuple[float, ...] = ()


@dataclass(frozen=True)
class Finding:
    """What one protocol's entries say of one claim. ``first`` / ``second``: the measure of each side
    (the mean seconds per epoch for timings; None when missing); ``difference`` for accuracies,
    ``ratio`` for costs; ``note``: why a verdict is missing, how it was measured or how it compares
    with the claimed size."""

    claim: Claim
    protocol: str
    verdict: str
    first: float | None = None
    second: float | None = None
    difference: Difference | None = None
    ratio: Ratio | None = None
    note: str = ""
    upper_bounds: tuple[str, ...] = ()  # the sides (defense ids) whose robust accuracy is flagged as an overestimate


def load_claims(path: Path = CLAIMS_FILE) -> list[Claim]:
    """The ``[[claim]]`` tables of ``path``, checked: known fields, measures, directions and sizes."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RobustdeqError(f"{path}: not a readable claims file: {exc}") from None
    claims: list[Claim] = []
    for i, table in enumerate(data.get("claim", [])):
        where = f"{path}: claim {i + 1}"
        unknown, missing = set(table) - {*REQUIRED, *OPTIONAL}, set(REQUIRED) - set(table)
        if unknown or missing:
            raise RobustdeqError(f"{where}: unknown {sorted(unknown)}, missing {sorted(missing)}")
        measure, expected = table["measure"], table["expected"]
        if measure not in (*ACCURACIES, *COSTS):
            raise RobustdeqError(f"{where}: measure {measure!r} is not one of {[*ACCURACIES, *COSTS]}")
        if expected not in EXPECTED:
            raise RobustdeqError(f"{where}: expected {expected!r} is not one of {list(EXPECTED)}")
        check_size(where, table)
        protocols = table["protocols"]
        if not (isinstance(protocols, list) and protocols and all(isinstance(p, str) and p for p in protocols)):
            raise RobustdeqError(f'{where}: protocols must be a list of protocol ids, e.g. ["digits-linf"]')
        if len(set(protocols)) != len(protocols):
            raise RobustdeqError(f"{where}: protocols repeat: {protocols}")
        if measure == "train_seconds" and len(protocols) != 1:
            raise RobustdeqError(
                f"{where}: a train_seconds claim names one protocol, the one its benchmark was timed under"
            )
        if (measure == "train_seconds") != ("benchmark" in table):
            raise RobustdeqError(
                f"{where}: a train_seconds claim reads repeated timings from a benchmark results file "
                "(benchmark = '<file under benchmarks/results>'), and only a train_seconds claim does"
            )
        if "circular" in table and not str(table["circular"]).strip():
            raise RobustdeqError(f"{where}: circular must say why the measurement cannot test the claim")
        default = ACCURACY_MARGIN if measure in ACCURACIES else COST_MARGIN
        floats = {k: float(table[k]) for k in ("expected_ratio", "expected_difference") if k in table}
        margin = float(table.get("margin", default))
        claims.append(Claim(**{**table, **floats, "protocols": tuple(protocols), "margin": margin}))
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise RobustdeqError(f"{path}: claim ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return claims


def check_size(where: str, table: dict[str, Any]) -> None:
    """A claimed size fits the measure and points the way ``expected`` does."""
    expected = table["expected"]
    if "expected_ratio" in table:
        ratio = table["expected_ratio"]
        if table["measure"] not in COSTS:
            raise RobustdeqError(f"{where}: expected_ratio is for costs; accuracies take expected_difference")
        if not isinstance(ratio, int | float) or ratio <= 0 or ratio == 1:
            raise RobustdeqError(f"{where}: expected_ratio must be a positive number other than 1")
        if expected != ("lower" if ratio < 1 else "higher"):
            raise RobustdeqError(f"{where}: expected_ratio {ratio} contradicts expected = {expected!r}")
    if "expected_difference" in table:
        difference = table["expected_difference"]
        if table["measure"] not in ACCURACIES:
            raise RobustdeqError(f"{where}: expected_difference is for accuracies; costs take expected_ratio")
        if not isinstance(difference, int | float) or not -1 < difference < 1 or difference == 0:
            raise RobustdeqError(f"{where}: expected_difference must be a fraction in (-1, 1) other than 0")
        if expected != ("higher" if difference > 0 else "lower"):
            raise RobustdeqError(f"{where}: expected_difference {difference} contradicts expected = {expected!r}")


def verdict(expected: str, low: float, high: float, margin: float, p: float = 0.0, size: float | None = None) -> str:
    """The verdict of an accuracy claim from the interval (low, high) of first - second, the paired
    test's p and the claimed difference ``size`` (module docstring). A direction (``higher``,
    ``lower``) also needs p below alpha: Newcombe's interval and the exact McNemar test can disagree
    at the margin, and then it is inconclusive."""
    if size is not None and expected == "higher":
        if high < size - margin:
            return CONTRADICTED
        return SUPPORTED if low > 0 and p < ALPHA else INCONCLUSIVE
    if size is not None and expected == "lower":
        if low > size + margin:
            return CONTRADICTED
        return SUPPORTED if high < 0 and p < ALPHA else INCONCLUSIVE
    if expected in ("higher", "lower") and p >= ALPHA:
        return INCONCLUSIVE
    if expected == "higher":
        return SUPPORTED if low > 0 else CONTRADICTED if high < 0 else INCONCLUSIVE
    if expected == "lower":
        return SUPPORTED if high < 0 else CONTRADICTED if low > 0 else INCONCLUSIVE
    if expected == "similar":
        if -margin < low and high < margin:
            return SUPPORTED
        return CONTRADICTED if high < -margin or low > margin else INCONCLUSIVE
    return SUPPORTED if low > -margin else CONTRADICTED if high < -margin else INCONCLUSIVE  # not-lower


def ratio_verdict(expected: str, low: float, high: float, margin: float, size: float | None = None) -> str:
    """The verdict of a cost claim from the interval (low, high) of first / second and the claimed
    ratio ``size`` (module docstring)."""
    if size is not None and size < 1:
        bound = size * (1 + margin)
        if low > bound:
            return CONTRADICTED
        return SUPPORTED if high < 1 else INCONCLUSIVE_REPEATS
    if size is not None:
        bound = size / (1 + margin)
        if high < bound:
            return CONTRADICTED
        return SUPPORTED if low > 1 else INCONCLUSIVE_REPEATS
    if expected == "lower":
        return SUPPORTED if high < 1 - margin else CONTRADICTED if low > 1 + margin else NO_DIFFERENCE
    if expected == "higher":
        return SUPPORTED if low > 1 + margin else CONTRADICTED if high < 1 - margin else NO_DIFFERENCE
    if expected == "similar":
        if 1 - margin <= low and high <= 1 + margin:
            return SUPPORTED
        return CONTRADICTED if high < 1 - margin or low > 1 + margin else INCONCLUSIVE_REPEATS
    return SUPPORTED if low >= 1 - margin else CONTRADICTED if high < 1 - margin else INCONCLUSIVE_REPEATS


def cost_verdict(expected: str, ratio: float, margin: float) -> str:
    """The verdict from one measurement each (:func:`ratio_verdict` with low = high = ``ratio``)."""
    return ratio_verdict(expected, ratio, ratio, margin)


def accuracy_difference(first: dict[str, Any], second: dict[str, Any], measure: str) -> Difference:
    """first - second in the measure's accuracy: paired when both have per-example outcomes."""
    if pairable(first, second):
        key = "robust" if measure == "robust" else "clean_correct"
        return paired_difference(unbits(first["per_example"][key]), unbits(second["per_example"][key]))
    field = ACCURACIES[measure]
    n1, n2 = first["n_examples"], second["n_examples"]
    return unpaired_difference(round(first[field] * n1), n1, round(second[field] * n2), n2)


def benchmark_ratio(claim: Claim, folder: Path = BENCHMARK_RESULTS) -> tuple[Ratio | None, str]:
    """(first / second of the mean seconds per epoch with its spread over the repeats, "") from the
    claim's benchmark results file in ``folder``, timed under the claim's (one) protocol, or (None, why not)."""
    name = f"benchmarks/results/{claim.benchmark}"
    protocol = claim.protocols[0]
    rerun = (
        f"run benchmarks/jiio_vs_pgd_at.py --repeats {MIN_REPEATS} --protocol {protocol} --first {claim.first} "
        f"--second {claim.second} on an idle machine"
    )
    path = folder / str(claim.benchmark)
    if not path.is_file():
        return None, f"no {name} yet: {rerun}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("protocol") != protocol:
            return None, f"{name} was measured under {data.get('protocol')!r}, not {protocol}"
        if "repeats" not in data:
            return None, f"{name} holds one timing per defense (written before --repeats): {rerun}"
        runs = {}
        for side in (claim.first, claim.second):
            result = data["results"].get(side)
            if result is None:
                return None, f"{name} has no timings of {side}"
            runs[side] = [float(s) for s in result["seconds_per_epoch_runs"]]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return None, f"{name} is not a benchmark results file ({type(exc).__name__}: {exc})"
    first, second = runs[claim.first], runs[claim.second]
    repeats = min(len(first), len(second))
    if repeats < MIN_REPEATS or min(first + second) <= 0:
        return None, f"{name} has {repeats} timing(s) of each defense; a verdict needs {MIN_REPEATS}: {rerun}"
    mean = (sum(first) / len(first)) / (sum(second) / len(second))
    ratio = Ratio(mean, min(first) / max(second), max(first) / min(second), repeats, tuple(first), tuple(second))
    return ratio, ""


def size_note(claim: Claim, finding: Finding) -> str:
    """How the measurement compares with the claimed size (empty without one)."""
    r, d = finding.ratio, finding.difference
    if claim.expected_ratio is not None and r is not None:
        size = claim.expected_ratio
        bound = size * (1 + claim.margin) if size < 1 else size / (1 + claim.margin)
        counts = f"claimed x{size:g}: x{bound:.2f} or {'below' if size < 1 else 'above'} counts as that size"
        if finding.verdict != CONTRADICTED:
            return counts
        if (r.high < 1) if size < 1 else (r.low > 1):
            return f"{counts}; {'cheaper' if size < 1 else 'costlier'} in every pairing, but by less than claimed"
        return f"{counts}; the measured ratio excludes it"
    if claim.expected_difference is not None and d is not None:
        size = claim.expected_difference
        bound = size - claim.margin if size > 0 else size + claim.margin
        return f"claimed {100 * size:+.1f} points: {100 * bound:+.1f} or beyond counts as that size"
    return ""


def measure(claim: Claim, protocol: str, entries: dict[str, dict[str, Any]], benchmarks: Path) -> Finding:
    """The claim's measurement and verdict on ``protocol``'s ``entries``, circularity aside."""
    if claim.measure == "train_seconds":
        ratio, why = benchmark_ratio(claim, benchmarks)
        if ratio is None:
            return Finding(claim, protocol, NOT_MEASURED, note=why)
        found = Finding(
            claim,
            protocol,
            ratio_verdict(claim.expected, ratio.low, ratio.high, claim.margin, claim.expected_ratio),
            sum(ratio.first_runs) / len(ratio.first_runs),
            sum(ratio.second_runs) / len(ratio.second_runs),
            ratio=ratio,
        )
        how = f"{ratio.repeats} interleaved timings each (benchmarks/results/{claim.benchmark}); interval: their spread"
        return dataclasses.replace(found, note="; ".join(filter(None, (how, size_note(claim, found)))))
    if not entries:
        return Finding(claim, protocol, NOT_EVALUATED, note=f"{NO_ENTRIES_YET} under {protocol}")
    missing = [d for d in (claim.first, claim.second) if d not in entries]
    if missing:
        return Finding(claim, protocol, NOT_EVALUATED, note=f"no entry for {', '.join(missing)} under {protocol}")
    first, second = entries[claim.first], entries[claim.second]
    if version_key(first) != version_key(second):
        why = "evaluated under different protocol versions or numbers of examples"
        return Finding(claim, protocol, NOT_COMPARABLE, note=why)
    if claim.measure in ACCURACIES:
        field = ACCURACIES[claim.measure]
        d = accuracy_difference(first, second, claim.measure)
        result = verdict(claim.expected, d.low, d.high, claim.margin, d.p, claim.expected_difference)
        flagged = upper_bounds(claim, first, second) if claim.measure == "robust" else {}
        found = Finding(claim, protocol, result, first[field], second[field], d, upper_bounds=tuple(flagged))
        how = "" if d.paired else "unpaired (no per-example outcomes): two-proportion test"
        bounds = (
            f"upper bounds: {'; '.join(f'{k} is flagged {v}' for k, v in flagged.items())}, so its robust accuracy "
            "is probably too high and the verdict compares the numbers as measured"
            if flagged
            else ""
        )
        return dataclasses.replace(found, note="; ".join(filter(None, (how, size_note(claim, found), bounds))))
    a, b = first["forward_cost"], second["forward_cost"]
    if a is None or b is None or b <= 0:
        return Finding(claim, protocol, NOT_EVALUATED, a, b, note="forward_cost not recorded")
    r = Ratio(a / b, a / b, a / b)
    result = ratio_verdict(claim.expected, r.low, r.high, claim.margin, claim.expected_ratio)
    found = Finding(claim, protocol, result, a, b, None, r)
    return dataclasses.replace(found, note="; ".join(filter(None, ("one count each", size_note(claim, found)))))


def upper_bounds(claim: Claim, first: dict[str, Any], second: dict[str, Any]) -> dict[str, str]:
    """Defense id -> its overestimate flags (comma-separated), for each side of ``claim`` that has any."""
    flags = {claim.first: overestimates(first.get("flags", [])), claim.second: overestimates(second.get("flags", []))}
    return {d: ", ".join(found) for d, found in flags.items() if found}


def assess(
    claim: Claim,
    entries: dict[str, dict[str, Any]],
    benchmarks: Path = BENCHMARK_RESULTS,
    protocol: str | None = None,
) -> Finding:
    """The finding for ``claim`` on ``protocol`` (default: the claim's first) from ``entries`` (defense
    id -> entry, that protocol's only; empty when it has none yet) and, for timings, the benchmark
    results in ``benchmarks``. A circular claim keeps its measurement but gets no verdict, and its
    reason as the note; without a measurement (an entry missing) it says why, like any other."""
    found = measure(claim, protocol or claim.protocols[0], entries, benchmarks)
    if claim.circular and found.verdict not in (NOT_EVALUATED, NOT_MEASURED, NOT_COMPARABLE):
        return dataclasses.replace(found, verdict=CIRCULAR, note=claim.circular.strip())
    return found


def assess_all(
    claims: list[Claim], entries: dict[str, dict[str, dict[str, Any]]], benchmarks: Path = BENCHMARK_RESULTS
) -> list[Finding]:
    """One finding per claim and protocol, in the claims' order. ``entries``: protocol -> defense id ->
    entry (protocols without entries may be absent: their findings say "no entries yet")."""
    return [assess(c, entries.get(p, {}), benchmarks, p) for c in claims for p in c.protocols]


def protocols_of(findings: list[Finding]) -> list[str]:
    """The protocols the findings cover, in the order the claims first name them."""
    return list(dict.fromkeys(f.protocol for f in findings))


def value(finding: Finding, side: str) -> str:
    """One side's (``first`` or ``second``) measure: an accuracy in percent, a count, or the mean
    seconds per epoch [min, max]."""
    which = finding.first if side == "first" else finding.second
    if which is None:
        return "-"
    if finding.claim.measure in ACCURACIES:
        return f"{100 * which:.1f} %"
    r = finding.ratio
    if finding.claim.measure == "train_seconds" and r is not None:
        runs = r.first_runs if side == "first" else r.second_runs
        return f"{which:.2f} s/epoch [{min(runs):.2f}, {max(runs):.2f}]"
    return f"{which:.1f}"


def measured(finding: Finding) -> str:
    """The difference (points) with its 95% interval, or the ratio with its spread."""
    d, r = finding.difference, finding.ratio
    if d is not None:
        return f"{100 * d.estimate:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"
    if r is not None:
        return f"x{r.estimate:.2f}" + (f" [{r.low:.2f}, {r.high:.2f}]" if r.repeats > 1 else "")
    return "-"


def p_value(finding: Finding) -> str:
    """The exact McNemar p-value of an accuracy difference (or the unpaired test's), else "-"."""
    return "-" if finding.difference is None else f"{finding.difference.p:.3g}"


def in_brief(finding: Finding | None) -> tuple[str, str]:
    """One summary cell as (verdict, detail): the measurement and p where there is one, "no entries yet"
    for a protocol without entries; ("-", "") where the claim does not name the protocol."""
    if finding is None:
        return "-", ""
    detail = []
    if finding.difference is not None or finding.ratio is not None:
        detail.append(measured(finding))
    if finding.difference is not None:
        detail.append(f"p {p_value(finding)}")
    if finding.upper_bounds:
        detail.append(f"⚠ upper bounds: {', '.join(finding.upper_bounds)}")
    if not detail and finding.note.startswith(NO_ENTRIES_YET):
        detail.append(NO_ENTRIES_YET)
    return finding.verdict, ", ".join(detail)


def summary_rows(findings: list[Finding]) -> tuple[list[str], list[tuple[Claim, list[tuple[str, str]]]]]:
    """(the protocols, one row per claim: the claim and its :func:`in_brief` cell per protocol)."""
    protocols = protocols_of(findings)
    by_claim: dict[str, dict[str, Finding]] = {}
    claims: dict[str, Claim] = {}
    for f in findings:
        by_claim.setdefault(f.claim.id, {})[f.protocol] = f
        claims.setdefault(f.claim.id, f.claim)
    rows = [(claims[i], [in_brief(cells.get(p)) for p in protocols]) for i, cells in by_claim.items()]
    return protocols, rows


def expectation(claim: Claim) -> str:
    """The measure and what the paper expects of it, with the claimed size and the margin."""
    text = f"{claim.measure}, expected {claim.expected}"
    if claim.expected_ratio is not None:
        text += f", about x{claim.expected_ratio:g}"
    if claim.expected_difference is not None:
        text += f", about {100 * claim.expected_difference:+.1f} points"
    if claim.expected in ("similar", "not-lower") or claim.expected_ratio or claim.expected_difference:
        text += f" (margin {claim.margin:g})"
    return text


def cell(text: str) -> str:
    return text.replace("|", "\\|") or "-"


def markdown_section(findings: list[Finding]) -> str:
    """A Markdown section: a summary (one row per claim, one column per protocol), then a table per
    protocol with every claim it tests, each row with its note."""
    protocols, summary = summary_rows(findings)
    lines = [
        "## The seed papers' claims",
        "",
        "Computed from the entries and benchmark results by `robustdeq report` (claims, entry pairs and the "
        "protocols that test them: `robustdeq/report/claims.toml`; rules: `docs/statistics.md`). Each protocol "
        "tests a claim on its own entries: a verdict per data set. Accuracy differences are first - second in "
        "points with their 95% interval (Newcombe, paired) and the exact McNemar p-value; costs are the ratio "
        "first / second: block evaluations, one count each; training time, the mean of repeated interleaved "
        "timings with their spread. A claimed size is tested, not only the direction. A verdict holds at this "
        "protocol's number of examples (or these repeats) only: `inconclusive` means the measurement cannot tell, "
        "not that the claim is false; `not measured` that the timings do not exist yet; `not evaluated` that an "
        "entry (or, `no entries yet`, every entry) of the protocol is missing; `no verdict: circular` that the "
        "benchmark fixes the answer by construction (the note says how).",
        "",
        "| claim | first vs second | measure | " + " | ".join(protocols) + " |",
        "|:--|:--|:--|" + ":--|" * len(protocols),
    ]
    for c, cells in summary:
        lines.append(
            f"| [{c.text}]({c.paper}) | {c.first} vs {c.second} | {expectation(c)} | "
            + " | ".join("-" if v == "-" else cell(f"**{v}** {detail}".strip()) for v, detail in cells)
            + " |"
        )
    for protocol in protocols:
        lines += [
            "",
            f"### On {protocol}",
            "",
            "| claim | first vs second | measure | first | second | measured [interval] | p | verdict | note |",
            "|:--|:--|:--|--:|--:|--:|--:|:--|:--|",
        ]
        for f in findings:
            if f.protocol != protocol:
                continue
            c = f.claim
            lines.append(
                f"| [{c.text}]({c.paper}) | {c.first} vs {c.second} | {expectation(c)} | {value(f, 'first')} | "
                f"{value(f, 'second')} | {measured(f)} | {p_value(f)} | **{f.verdict}** | {cell(f.note)} |"
            )
    unpaired = [
        f"{f.claim.id} ({f.protocol})" for f in findings if f.difference is not None and not f.difference.paired
    ]
    if unpaired:
        lines += [
            "",
            f"Unpaired comparisons (entries without per-example outcomes): {', '.join(unpaired)}; their intervals "
            "are wider than paired ones would be.",
        ]
    return "\n".join(lines) + "\n"
