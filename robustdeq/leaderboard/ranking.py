"""Rank groups: which entries of one protocol a reader can tell apart by their robust accuracy.

Entries are ordered by robust accuracy, then clean accuracy, then defense id. Entries whose
flags put them in the ``overestimate`` or ``not-comparable`` class
(:func:`robustdeq.records.flags.status`) are not ranked: they follow the ranked ones with
rank ``-``. The ranked ones fall into groups, from the top:

1. the group starts at the best entry not yet in a group;
2. each entry below it is compared with that best entry: the exact McNemar test on their paired
   per-example robust outcomes (``per_example.robust``) when both have them, else (schema
   version 1 entries) the unpaired two-proportion test of
   :func:`robustdeq.leaderboard.stats.unpaired_difference`, conservative for shared examples;
3. the p-values of those comparisons are Holm-adjusted together (one family per group);
4. the group takes the entries below its best, in order, until the first whose adjusted
   p-value is below ``alpha`` (significantly worse); that one starts the next group.

Step 4 keeps every group a contiguous run of positions, so a rank reads as a range: ``2-8`` is
the group holding the 2nd to the 8th entry, ``1`` a group of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard.stats import holm, paired_difference, unpaired_difference
from robustdeq.records.flags import status
from robustdeq.records.outcomes import unbits

ALPHA = 0.05
UNRANKED_CLASSES = ("overestimate", "not-comparable")


@dataclass(frozen=True)
class Ranked:
    """One entry's place in the table.

    ``position`` is 1-based over every entry, ranked or not; ``group`` counts the rank groups
    from 1 (None when unranked) and ``rank`` shows the group's first and last position (``-``
    when unranked). ``p`` is the Holm-adjusted p-value of the comparison with the group's best
    entry (None for that best entry and for unranked ones); ``paired`` says whether that
    comparison paired the per-example outcomes.
    """

    entry: dict[str, Any]
    position: int
    group: int | None
    rank: str
    p: float | None
    paired: bool | None


def order_key(entry: dict[str, Any]) -> tuple[float, float, str]:
    """Robust accuracy (descending), then clean accuracy (descending), then defense id."""
    return -entry["robust_accuracy"], -entry["clean_accuracy"], entry["defense"]


def is_ranked(entry: dict[str, Any]) -> bool:
    """Whether the entry's flags leave its robust accuracy sound and comparable."""
    return status(entry["flags"]) not in UNRANKED_CLASSES


def pairable(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Both entries have per-example outcomes over the same test-set indices."""
    a, b = first.get("per_example"), second.get("per_example")
    return a is not None and b is not None and a["indices"] == b["indices"]


def compare(best: dict[str, Any], other: dict[str, Any]) -> tuple[float, bool]:
    """Two-sided p-value of ``best`` and ``other`` having the same robust accuracy, and whether it
    came from the paired (exact McNemar) test."""
    if pairable(best, other):
        difference = paired_difference(unbits(best["per_example"]["robust"]), unbits(other["per_example"]["robust"]))
        return difference.p, True
    n1, n2 = best["n_examples"], other["n_examples"]
    k1, k2 = round(best["robust_accuracy"] * n1), round(other["robust_accuracy"] * n2)
    return unpaired_difference(k1, n1, k2, n2).p, False


def rank_groups(entries: list[dict[str, Any]], alpha: float = ALPHA) -> list[Ranked]:
    """Every entry in table order (ranked ones first) with its rank group; see the module docstring.

    Entries must share one protocol version (same content hash): their examples are the same
    only then, and numbers from different protocol versions are never ranked together.
    """
    versions = {(e["protocol"], e["protocol_hash"]) for e in entries}
    if len(versions) > 1:
        listed = "; ".join(
            f"{p}@{h[:8]}: " + ", ".join(sorted(repr(e["defense"]) for e in entries if e["protocol_hash"] == h))
            for p, h in sorted(versions)
        )
        raise RobustdeqError(f"entries come from different protocol versions ({listed}); re-run them")
    ordered = sorted(entries, key=order_key)
    ranked = [e for e in ordered if is_ranked(e)]
    out: list[Ranked] = []
    group = 0
    while len(out) < len(ranked):
        start = len(out)
        best, below = ranked[start], ranked[start + 1 :]
        compared = [compare(best, other) for other in below]
        adjusted = holm([p for p, _ in compared])
        size = next((i for i, p in enumerate(adjusted) if p < alpha), len(below))
        group += 1
        rank = str(start + 1) if size == 0 else f"{start + 1}-{start + 1 + size}"
        out.append(Ranked(best, start + 1, group, rank, None, None))
        for i in range(size):
            out.append(Ranked(below[i], start + 2 + i, group, rank, adjusted[i], compared[i][1]))
    for e in ordered:
        if not is_ranked(e):
            out.append(Ranked(e, len(out) + 1, None, "-", None, None))
    return out
