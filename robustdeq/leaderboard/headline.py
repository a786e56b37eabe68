"""What the headline tables show of an entry, shared by the Markdown table and the site.

The headline has the columns a reader ranks by (STYLE.md, point 10): rank group, defense, model
family, recipe, clean and robust accuracy with their 95% Wilson intervals, AutoAttack, the
strongest attack run, parameters, forward cost and a status marker. Every other number (each
attack run, checks, the eps sweep, the solver) lives in the per-defense details.

Entries are ranked together only when they share the protocol version (content hash) and the
number of test examples; :func:`comparable` keeps the majority's and sets the rest apart.

Where a defense was retrained with several seeds (``seeds.json`` beside the entries,
:mod:`robustdeq.records.seeds`), the robust accuracy's spread across those seeds stands beside its
interval (:func:`seed_spread`): the interval covers the choice of test examples only.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from robustdeq.device import on_gpu
from robustdeq.leaderboard.stats import wilson
from robustdeq.records.entry import best_known
from robustdeq.records.flags import status
from robustdeq.records.outcomes import LETTERS, NOT_BROKEN
from robustdeq.records.store import read_entries, read_seeds

STATUS_MARKERS = {
    "overestimate": "⚠ unreliable",
    "not-comparable": "not comparable",
    "informational": "ℹ info",
    "ok": "ok",
}
STATUS_MEANINGS = {
    "overestimate": "a flag of class overestimate: the robust accuracy is probably too high; not ranked",
    "not-comparable": "measured differently from the protocol (e.g. a smaller budget, other random draws); not ranked",
    "informational": "informational flags only: worth knowing, already handled by the evaluation",
    "ok": "no flags",
}
BEST_KNOWN = "◇"
BEST_KNOWN_MEANING = (
    "best known: an outside attack, verified by robustdeq challenge, broke examples the protocol's attacks left "
    "robust; the number is the per-example worst case over both (the protocol's own number is on the entry's page)"
)
DEVIATES = "†"
DEVIATES_MEANING = "the defense departs from its paper: the deviations are listed on its page"
GPU = "GPU"
GPU_MEANING = "computed on a CUDA GPU (numbers differ from CPU ones in the last bits and in random starts)"
MISSING = "-"
SEEDS = "seeds a-b: low-high, sd s"
SEEDS_MEANING = (
    "the robust accuracy (%) of the same defense retrained with each of those seeds, lowest and highest, and its "
    "standard deviation across them, measured by benchmarks/seed_variance.py (recorded in seeds.json beside the "
    "entries): how far retraining moves the number, which the interval does not cover; (protocol v2): measured "
    "under that protocol version, not the entry's"
)


def version_key(entry: dict[str, Any]) -> tuple[str, str, int]:
    """What two entries must share to be ranked together: protocol, its content hash, n examples."""
    return entry["protocol"], entry["protocol_hash"], entry["n_examples"]


def comparable(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the entries of the most common :func:`version_key`, every other entry).

    Ties go to the higher protocol version, then to more examples: during a regeneration the
    newer entries win once they are as many as the old ones.
    """
    if not entries:
        return [], []
    counts = Counter(version_key(e) for e in entries)
    versions = {version_key(e): e["protocol_version"] for e in entries}
    majority = max(counts, key=lambda k: (counts[k], versions[k], k[2], k[1]))
    return [e for e in entries if version_key(e) == majority], [e for e in entries if version_key(e) != majority]


def computed_on_gpu(entry: dict[str, Any]) -> bool:
    device = entry["provenance"].get("device")
    return device is not None and on_gpu(device)


def deviations(entry: dict[str, Any]) -> list[dict[str, str]]:
    """The deviations from its paper that the entry's fidelity record lists (none when not recorded)."""
    fidelity = entry.get("fidelity")
    return [] if fidelity is None else fidelity["deviations"]


def recipe(entry: dict[str, Any]) -> str:
    training = entry["provenance"]["training"]
    return MISSING if training is None else training["recipe"]


def autoattack(entry: dict[str, Any]) -> float | None:
    """AutoAttack's accuracy: the worst of its runs (``autoattack`` and its gradient-mode variants)."""
    runs = [acc for name, acc in entry["attacks"].items() if re.fullmatch(r"autoattack([@+].*)?", name)]
    return min(runs) if runs else None


def strongest(entry: dict[str, Any]) -> tuple[str, float] | None:
    """The attack run with the lowest accuracy (the first run in the entry's order on ties)."""
    if not entry["attacks"]:
        return None
    name = min(entry["attacks"], key=entry["attacks"].__getitem__)
    return name, entry["attacks"][name]


def first_broken(entry: dict[str, Any]) -> Counter[str] | None:
    """Per attack run, the examples it was the first to break (None without per-example outcomes)."""
    per_example = entry.get("per_example")
    if per_example is None:
        return None
    letters = dict(zip(LETTERS, per_example["attack_order"], strict=False))
    return Counter(letters[c] for c in per_example["broken_by"] if c != NOT_BROKEN)


def markers(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """(marker, meaning): the status of the entry's flags, then † (deviates from its paper) and GPU."""
    level = status(entry["flags"])
    out = [(STATUS_MARKERS[level], STATUS_MEANINGS[level])]
    if entry.get("best_known"):
        out.append((BEST_KNOWN, BEST_KNOWN_MEANING))
    if deviations(entry):
        out.append((DEVIATES, DEVIATES_MEANING))
    if computed_on_gpu(entry):
        out.append((GPU, GPU_MEANING))
    return out


def pct(accuracy: float | None) -> str:
    return MISSING if accuracy is None else f"{100 * accuracy:.1f}"


def interval(accuracy: float, n: int) -> str:
    """``[low, high]`` in percent: the 95% Wilson interval of ``accuracy`` measured on ``n`` examples."""
    low, high = wilson(round(accuracy * n), n)
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


def with_seeds(entries: list[dict[str, Any]], seeds: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The entries as tables show them: each whose defense ``seeds`` (a protocol folder's ``seeds.json``,
    or None) has a spread for carries it as ``seed_spread``."""
    spreads = {} if seeds is None else seeds["defenses"]
    return [e if e["defense"] not in spreads else {**e, "seed_spread": spreads[e["defense"]]} for e in entries]


def shown_entries(folder: Path) -> list[dict[str, Any]]:
    """A protocol folder's entries as every table shows them: best-known numbers (outside attacks
    recorded), and the folder's training-seed spread (:func:`with_seeds`)."""
    return with_seeds([best_known(e) for e in read_entries(folder)], read_seeds(folder))


def seed_list(seeds: list[int]) -> str:
    """``seeds 0-2`` for consecutive seeds, else ``seeds 0, 3, 7`` (``seed 4`` for one)."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return f"seeds {', '.join(map(str, seeds))}"


def seed_measured_apart(entry: dict[str, Any]) -> str | None:
    """How the entry's seed spread was measured differently from the entry (``protocol v2``,
    ``n = 50``), or None when it was measured as the entry was (or there is none)."""
    spread = entry.get("seed_spread")
    if spread is None:
        return None
    apart = []
    if spread["protocol_version"] != entry["protocol_version"]:
        apart.append(f"protocol v{spread['protocol_version']}")
    elif spread["protocol_hash"] != entry["protocol_hash"]:
        apart.append(f"protocol hash {spread['protocol_hash'][:12]}")
    if spread["n_examples"] != entry["n_examples"]:
        apart.append(f"n = {spread['n_examples']}")
    return ", ".join(apart) or None


def seed_spread(entry: dict[str, Any]) -> str | None:
    """``seeds 0-2: 37.0-46.0, sd 4.7 (protocol v2)``: the robust accuracy (%) of the entry's defense
    retrained with each seed, lowest to highest, and its sample standard deviation, with how it was
    measured when not as the entry was (:func:`seed_measured_apart`); None without a seed spread."""
    spread = entry.get("seed_spread")
    if spread is None:
        return None
    robust = spread["robust_accuracy"]
    apart = seed_measured_apart(entry)
    return f"{seed_list(spread['seeds'])}: {pct(robust['min'])}-{pct(robust['max'])}, sd {100 * robust['std']:.1f}" + (
        "" if apart is None else f" ({apart})"
    )
