"""The seed papers' claims, tested on the leaderboard entries (never typed by hand).

Each claim (``claims.toml`` beside this module) names two entries of one protocol, a measure and
the direction the paper expects. Accuracies (``robust``, ``clean``) are compared example by
example: the paired difference first - second with Newcombe's 95% interval and the exact McNemar
p-value (:func:`robustdeq.leaderboard.stats.paired_difference`); entries without per-example
outcomes (schema version 1) fall back to the unpaired interval and test. Costs
(``forward_cost``, ``train_seconds``) are single measurements: the ratio first / second, with a
band of ``margin`` around 1 inside which it shows no difference (:func:`cost_verdict`).

Verdicts, per claim and at this protocol's n (no correction across claims: each is its own
question, and the p-value is shown):

- ``higher``: supported when the interval lies above 0, contradicted when below, else inconclusive;
  ``lower`` the mirror image;
- ``similar``: supported when the interval lies inside (-margin, margin), contradicted when it
  lies entirely outside that band, else inconclusive;
- ``not-lower`` (at least as good): supported when the interval lies above -margin, contradicted
  when it lies below it, else inconclusive;
- a missing entry gives ``not evaluated``; entries of different protocol versions or n give
  ``not comparable``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard.headline import version_key
from robustdeq.leaderboard.ranking import ALPHA, pairable
from robustdeq.leaderboard.stats import Difference, paired_difference, unpaired_difference
from robustdeq.records.outcomes import unbits

CLAIMS_FILE = Path(__file__).with_name("claims.toml")
ACCURACIES = {"robust": "robust_accuracy", "clean": "clean_accuracy"}
COSTS = ("forward_cost", "train_seconds")
EXPECTED = ("higher", "lower", "similar", "not-lower")
ACCURACY_MARGIN = 0.05
COST_MARGIN = 0.1
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive at this n"
NOT_EVALUATED, NOT_COMPARABLE = "not evaluated", "not comparable"
NO_DIFFERENCE = "no clear difference"  # a cost ratio within the margin of 1


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    text: str
    protocol: str
    first: str
    second: str
    measure: str
    expected: str
    margin: float


@dataclass(frozen=True)
class Finding:
    """What the entries say of one claim. ``first`` / ``second``: the measure of each entry (None
    when missing); ``difference`` for accuracies, ``ratio`` for costs; ``note`` says why a
    verdict is missing or how it was computed."""

    claim: Claim
    verdict: str
    first: float | None = None
    second: float | None = None
    difference: Difference | None = None
    ratio: float | None = None
    note: str = ""


def load_claims(path: Path = CLAIMS_FILE) -> list[Claim]:
    """The ``[[claim]]`` tables of ``path``, checked: known fields only, known measures and directions."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RobustdeqError(f"{path}: not a readable claims file: {exc}") from None
    fields = {"id", "paper", "text", "protocol", "first", "second", "measure", "expected", "margin"}
    claims: list[Claim] = []
    for i, table in enumerate(data.get("claim", [])):
        where = f"{path}: claim {i + 1}"
        unknown, missing = set(table) - fields, fields - {"margin"} - set(table)
        if unknown or missing:
            raise RobustdeqError(f"{where}: unknown {sorted(unknown)}, missing {sorted(missing)}")
        if table["measure"] not in (*ACCURACIES, *COSTS):
            raise RobustdeqError(f"{where}: measure {table['measure']!r} is not one of {[*ACCURACIES, *COSTS]}")
        if table["expected"] not in EXPECTED:
            raise RobustdeqError(f"{where}: expected {table['expected']!r} is not one of {list(EXPECTED)}")
        default = ACCURACY_MARGIN if table["measure"] in ACCURACIES else COST_MARGIN
        claims.append(Claim(**{**table, "margin": float(table.get("margin", default))}))
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise RobustdeqError(f"{path}: claim ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return claims


def verdict(expected: str, low: float, high: float, margin: float, p: float = 0.0) -> str:
    """The verdict from an interval (low, high) of first - second (for costs: of the ratio - 1).
    A direction (``higher``, ``lower``) also needs the paired test's p below alpha: Newcombe's
    interval and the exact McNemar test can disagree at the margin, and then it is inconclusive."""
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


def accuracy_difference(first: dict[str, Any], second: dict[str, Any], measure: str) -> Difference:
    """first - second in the measure's accuracy: paired when both have per-example outcomes."""
    if pairable(first, second):
        key = "robust" if measure == "robust" else "clean_correct"
        return paired_difference(unbits(first["per_example"][key]), unbits(second["per_example"][key]))
    field = ACCURACIES[measure]
    n1, n2 = first["n_examples"], second["n_examples"]
    return unpaired_difference(round(first[field] * n1), n1, round(second[field] * n2), n2)


def assess(claim: Claim, entries: dict[str, dict[str, Any]]) -> Finding:
    """The finding for ``claim`` from ``entries`` (defense id -> entry, the claim's protocol only)."""
    missing = [d for d in (claim.first, claim.second) if d not in entries]
    if missing:
        return Finding(claim, NOT_EVALUATED, note=f"no entry for {', '.join(missing)} under {claim.protocol}")
    first, second = entries[claim.first], entries[claim.second]
    if version_key(first) != version_key(second):
        return Finding(claim, NOT_COMPARABLE, note="evaluated under different protocol versions or numbers of examples")
    if claim.measure in ACCURACIES:
        field = ACCURACIES[claim.measure]
        d = accuracy_difference(first, second, claim.measure)
        note = "paired, exact McNemar" if d.paired else "unpaired (no per-example outcomes): two-proportion test"
        return Finding(
            claim, verdict(claim.expected, d.low, d.high, claim.margin, d.p), first[field], second[field], d, note=note
        )
    a, b = cost(first, claim.measure), cost(second, claim.measure)
    if a is None or b is None or b <= 0:
        return Finding(claim, NOT_EVALUATED, a, b, note=f"{claim.measure} not recorded")
    ratio = a / b
    return Finding(claim, cost_verdict(claim.expected, ratio, claim.margin), a, b, ratio=ratio, note="one run each")


def cost_verdict(expected: str, ratio: float, margin: float) -> str:
    """The verdict from one measurement each: a ratio within ``margin`` of 1 shows no difference."""
    if expected == "higher":
        return SUPPORTED if ratio > 1 + margin else CONTRADICTED if ratio < 1 - margin else NO_DIFFERENCE
    if expected == "lower":
        return SUPPORTED if ratio < 1 - margin else CONTRADICTED if ratio > 1 + margin else NO_DIFFERENCE
    if expected == "similar":
        return SUPPORTED if abs(ratio - 1) <= margin else CONTRADICTED
    return SUPPORTED if ratio >= 1 - margin else CONTRADICTED  # not-lower


def cost(entry: dict[str, Any], measure: str) -> float | None:
    if measure == "forward_cost":
        value: float | None = entry["forward_cost"]
        return value
    return float(entry["provenance"]["train_seconds"])


def assess_all(claims: list[Claim], entries: dict[str, dict[str, dict[str, Any]]]) -> list[Finding]:
    """``entries``: protocol -> defense id -> entry (protocols without entries may be absent)."""
    return [assess(c, entries.get(c.protocol, {})) for c in claims]


def value(finding: Finding, which: float | None) -> str:
    if which is None:
        return "-"
    if finding.claim.measure in ACCURACIES:
        return f"{100 * which:.1f} %"
    return f"{which:.1f}" + (" s" if finding.claim.measure == "train_seconds" else "")


def measured(finding: Finding) -> str:
    d = finding.difference
    if d is not None:
        return f"{100 * d.estimate:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"
    if finding.ratio is not None:
        return f"x{finding.ratio:.2f}"
    return "-"


def markdown_section(findings: list[Finding]) -> str:
    """A Markdown section: one row per claim, then the notes."""
    lines = [
        "## The seed papers' claims",
        "",
        "Computed from the entries by `robustdeq report` (claims and entry pairs: `robustdeq/report/claims.toml`; "
        "method: `docs/statistics.md`). Accuracy differences are first - second in points with their 95% interval "
        "(Newcombe, paired) and the exact McNemar p-value; costs are the ratio first / second of one measurement "
        "each. A verdict holds at this protocol's number of examples only: `inconclusive` means the entries cannot "
        "tell, not that the claim is false.",
        "",
        "| claim | protocol | first vs second | measure | first | second | difference [95% CI] | p | verdict |",
        "|:--|:--|:--|:--|--:|--:|--:|--:|:--|",
    ]
    for f in findings:
        c = f.claim
        p = "-" if f.difference is None else f"{f.difference.p:.3g}"
        expected = f"{c.expected}" + (f" (margin {c.margin:g})" if c.expected in ("similar", "not-lower") else "")
        lines.append(
            f"| [{c.text}]({c.paper}) | {c.protocol} | {c.first} vs {c.second} | {c.measure}, expected {expected} | "
            f"{value(f, f.first)} | {value(f, f.second)} | {measured(f)} | {p} | **{f.verdict}** |"
        )
    notes = [f"- `{f.claim.id}`: {f.note}" for f in findings if f.note and f.verdict in (NOT_EVALUATED, NOT_COMPARABLE)]
    unpaired = [f.claim.id for f in findings if f.difference is not None and not f.difference.paired]
    if unpaired:
        notes.append(
            f"- unpaired comparisons (entries without per-example outcomes): {', '.join(unpaired)}; their intervals "
            "are wider than paired ones would be."
        )
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
