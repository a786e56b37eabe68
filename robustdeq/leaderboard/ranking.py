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

Groups answer "which entries are not worse than the group's best", not "which two entries differ":
two neighbours can sit in different groups although they are indistinguishable (each group is
cut where its *best* entry is significantly better). :func:`letter_display` answers the second
question for every pair: each ranked entry is compared with every entry below it (the same exact
McNemar test, or the unpaired one), the p-values of each entry's comparisons are Holm-adjusted
together (one family per entry; for a group's best entry it is the group's family of step 3, so
the letters never contradict the rank column), and a compact letter display (Piepho 2004, J.
Comput. Graph. Stat. 13:456-466: insert, absorb, sweep) gives each entry letters so that two
entries share a letter exactly when they are not significantly different.
"""

from __future__ import annotations

import dataclasses
import string
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
    comparison paired the per-example outcomes. ``letters``: the entry's letters in the compact
    letter display of all pairwise comparisons (:func:`letter_display`; ``-`` when unranked).
    """

    entry: dict[str, Any]
    position: int
    group: int | None
    rank: str
    p: float | None
    paired: bool | None
    letters: str = "-"


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


def compare(
    best: dict[str, Any], other: dict[str, Any], outcomes: dict[str, list[bool]] | None = None
) -> tuple[float, bool]:
    """Two-sided p-value of ``best`` and ``other`` having the same robust accuracy, and whether it
    came from the paired (exact McNemar) test. ``outcomes``: per-example robust outcomes already
    decoded, by defense id (decoded here when absent)."""
    if pairable(best, other):
        known = outcomes or {}
        first = known.get(best["defense"]) or unbits(best["per_example"]["robust"])
        second = known.get(other["defense"]) or unbits(other["per_example"]["robust"])
        return paired_difference(first, second).p, True
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
    shown = letter_display([r.entry for r in out], alpha)
    out = [dataclasses.replace(r, letters=letters) for r, letters in zip(out, shown, strict=True)]
    for e in ordered:
        if not is_ranked(e):
            out.append(Ranked(e, len(out) + 1, None, "-", None, None))
    return out


def pairwise_different(entries: list[dict[str, Any]], alpha: float = ALPHA) -> set[tuple[int, int]]:
    """The pairs (i, j), i < j, of ``entries`` (in table order) whose robust accuracies differ
    significantly. Each entry is compared (:func:`compare`) with every entry below it, and those
    p-values are Holm-adjusted together (one family per entry, as one family per group in
    :func:`rank_groups`: for a group's best entry the two families are the same); a pair differs
    when its adjusted p-value is below ``alpha``."""
    outcomes = {e["defense"]: unbits(e["per_example"]["robust"]) for e in entries if e.get("per_example") is not None}
    different = set()
    for i, upper in enumerate(entries):
        adjusted = holm([compare(upper, lower, outcomes)[0] for lower in entries[i + 1 :]])
        different |= {(i, i + 1 + k) for k, p in enumerate(adjusted) if p < alpha}
    return different


def letter_display(entries: list[dict[str, Any]], alpha: float = ALPHA) -> list[str]:
    """The compact letter display of ``entries`` (in table order): entries that share a letter are not
    significantly different (:func:`pairwise_different`), entries that share none are; ``a`` is the
    letter of the first entry."""
    return compact_letters(len(entries), pairwise_different(entries, alpha))


def compact_letters(n: int, different: set[tuple[int, int]]) -> list[str]:
    """Letters for items ``0 .. n-1`` such that two items share a letter exactly when their pair is not in
    ``different`` (pairs (i, j) with i < j): Piepho's (2004) insert-and-absorb algorithm, then his sweep,
    which drops letters no pair needs. Letters go to the columns in the order of their first item."""
    if n == 0:
        return []
    columns: list[set[int]] = [set(range(n))]
    for i, j in sorted(different):
        split: list[set[int]] = []
        for column in columns:
            if i in column and j in column:  # insert: the pair may share no letter
                split += [column - {i}, column - {j}]
            else:
                split.append(column)
        columns = absorb(split)
    columns = absorb(sweep(columns))
    columns.sort(key=lambda c: sorted(c))
    names = [letter(k) for k in range(len(columns))]
    return ["".join(name for name, column in zip(names, columns, strict=True) if i in column) for i in range(n)]


def absorb(columns: list[set[int]]) -> list[set[int]]:
    """The columns without duplicates and without any column contained in another (Piepho's absorb)."""
    kept: list[set[int]] = []
    for k, column in enumerate(columns):
        if not column or any(column < other for other in columns):
            continue
        if any(column == other for other in columns[:k]):
            continue
        kept.append(column)
    return kept


def sweep(columns: list[set[int]]) -> list[set[int]]:
    """Piepho's sweep: drop an item's letter when every item sharing that letter with it shares another
    letter with it too, so the letter connects nothing the others do not."""
    columns = [set(c) for c in columns]
    for k, column in enumerate(columns):
        for i in sorted(column):
            others = [c for m, c in enumerate(columns) if m != k and i in c]
            if others and all(any(j in c for c in others) for j in column - {i}):
                column.discard(i)
    return [c for c in columns if c]


def letter(k: int) -> str:
    """The k-th letter: a-z, then A-Z, then the number in brackets."""
    alphabet = string.ascii_lowercase + string.ascii_uppercase
    return alphabet[k] if k < len(alphabet) else f"[{k + 1}]"
